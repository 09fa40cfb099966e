"""What a Python program learns of a processor's tables through psycopg, the PostgreSQL
driver for Python: `python3 psycopg_catalog.py HOST PORT` prints one JSON object.

Queries with parameters go through the extended protocol, as psycopg sends them;
`description` holds the types each table's rows are sent with, named by psycopg.
"""

import json
import sys

import psycopg


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    with psycopg.connect(
        host=host,
        port=port,
        user="edgeflow",
        dbname="edgeflow",
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        one = lambda sql, params=None: conn.execute(sql, params).fetchone()[0]
        out = {
            "current_database": one("SELECT current_database()"),
            "current_schema": one("SELECT current_schema()"),
            "namespaces": [
                r[0]
                for r in conn.execute(
                    "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY nspname"
                )
            ],
            "tables": [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = %s AND table_type = %s ORDER BY table_name",
                    ["public", "BASE TABLE"],
                )
            ],
            "columns": {},
            "description": {},
        }
        for table in out["tables"]:
            out["columns"][table] = [
                list(r)
                for r in conn.execute(
                    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)"
                    " FROM pg_catalog.pg_attribute a"
                    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
                    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0"
                    " ORDER BY a.attnum",
                    ["public", table],
                )
            ]
            cur = conn.execute(f'SELECT * FROM "{table}" LIMIT 0')
            out["description"][table] = [
                [d.name, conn.adapters.types.get(d.type_code).name]
                for d in cur.description
            ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
