"""The shop adapter: the register's targets bound to the shop database's real schema
(types, constraints, triggers), and the strategies applied to its rows, in Python or as
one SQL statement."""
