"""The pure core: the register and its checks, durations, events, retention arithmetic,
anonymisation strategies, the art. 30 rendering and the sweep's rules.

Nothing here touches a database, a broker or a clock of its own (`now` is passed in):
import-linter forbids sqlalchemy, celery, kombu, redis and psycopg in this package, so
every rule is tested without a service.
"""
