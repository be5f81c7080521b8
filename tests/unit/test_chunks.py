"""Long lists of subjects or ids reach the store in chunks: every item once, in order."""

from __future__ import annotations

import pytest

from worker.store.sessions import chunks


def test_a_long_list_is_cut_into_full_chunks_and_a_shorter_last_one() -> None:
    items = list(range(2500))
    cut = list(chunks(items, 1000))
    assert [len(chunk) for chunk in cut] == [1000, 1000, 500]
    assert [item for chunk in cut for item in chunk] == items


def test_a_list_of_whole_chunks_ends_without_an_empty_one() -> None:
    assert list(chunks(["a", "b", "c", "d"], 2)) == [["a", "b"], ["c", "d"]]


def test_no_items_make_no_chunk() -> None:
    assert list(chunks([], 1000)) == []


def test_any_iterable_is_cut_into_lists() -> None:
    assert list(chunks((n for n in range(3)), 2)) == [[0, 1], [2]]


def test_a_chunk_size_below_one_is_refused_rather_than_dropping_the_items() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        list(chunks([1, 2], 0))
