<?php
// Lethe from a PHP shop: the outbox insert (inside the shop's own transaction) and the
// HTTP intake call. Copy what you need; docs/php-shops.md explains both.
declare(strict_types=1);

/**
 * Write one event to lethe_outbox with the PDO connection of the shop's transaction: it
 * is committed with the order, or rolled back with it. Lethe's relay sends it on.
 * $id names the fact (e.g. "order.closed:A-1009"): writing it twice stores it once.
 * $match holds values to match later (an e-mail address): Lethe keeps their keyed
 * hashes only, the text never leaves the shop database.
 */
function lethe_outbox(PDO $db, string $id, string $type, string $subject,
                      array $data = [], array $match = []): void
{
    $db->prepare('INSERT INTO lethe_outbox (id, type, subject, occurred_at, data, `match`)'
        . ' VALUES (?, ?, ?, ?, ?, ?)')
       ->execute([$id, $type, $subject, (new DateTimeImmutable())->format(DATE_ATOM),
                  $data ? json_encode($data, JSON_THROW_ON_ERROR) : null,
                  $match ? json_encode($match, JSON_THROW_ON_ERROR) : null]);
}

/**
 * Send events to Lethe's HTTP intake (`lethe intake`), for a shop that cannot write an
 * outbox. Returns [HTTP status, decoded answer]: 202 {"accepted": N, "refused": [...]};
 * on 503 (broker down) or a network error, send the same events again later (ids make
 * that harmless).
 */
function lethe_send(string $url, string $token, array $events): array
{
    $curl = curl_init(rtrim($url, '/') . '/v1/events');
    curl_setopt_array($curl, [
        CURLOPT_POST => true,
        CURLOPT_HTTPHEADER => ["Authorization: Bearer $token", 'Content-Type: application/json'],
        CURLOPT_POSTFIELDS => json_encode($events, JSON_THROW_ON_ERROR),
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 30,
    ]);
    $body = curl_exec($curl);
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    curl_close($curl);
    if ($body === false) {
        return [0, null];
    }
    return [$status, json_decode((string) $body, true)];
}
