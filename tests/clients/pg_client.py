"""Queries `inferwatch serve` with psycopg (extended protocol) and pandas.

Prints one JSON object; crates/cli/tests/pg_clients.rs checks it against
values computed from the raw events.
"""

import argparse
import json
import warnings

import pandas
import psycopg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    dsn = f"host=127.0.0.1 port={args.port} user=inferwatch password={args.password} dbname=inferwatch"
    result = {}
    with psycopg.connect(dsn, autocommit=True) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM inference")
            result["total"] = cursor.fetchone()[0]
            # Bound parameter: extended query protocol.
            cursor.execute(
                "SELECT count(*), quantile(latency_ms, 0.99) FROM inference WHERE model_version = %s",
                ("2.1",),
            )
            count, p99 = cursor.fetchone()
            result["canary_count"] = count
            result["canary_p99"] = p99
            try:
                cursor.execute("SELEC 1")
            except psycopg.Error as error:
                result["bad_sql_error"] = str(error).lower()
        with warnings.catch_warnings():
            # pandas prefers SQLAlchemy but reads from any DBAPI connection.
            warnings.simplefilter("ignore")
            frame = pandas.read_sql(
                "SELECT source_id, count(*) AS requests, "
                "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors "
                "FROM inference GROUP BY source_id",
                connection,
            )
    result["by_source"] = {
        row.source_id: {"requests": int(row.requests), "errors": int(row.errors)}
        for row in frame.itertuples()
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
