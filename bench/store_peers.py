"""Peers for `bench/run store` and `bench/run query`.

ingest  DB_PATH JSONL        load the JSONL into a DuckDB database file (native table)
query   ENGINE PARQUET_GLOB  run the three benchmark queries with ENGINE (duckdb or chdb)
        over inferwatch's own Parquet segments, print JSON {query: [seconds...], rows: {...}}

Each query runs REPEAT times in one process (the first run is cold for the
engine, the OS page cache is warm for everyone); the caller reports the median.
"""

import json
import os
import statistics
import sys
import time

REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))

DUCKDB_QUERIES = {
    "latency_quantiles_per_version_minute": """
        SELECT model_version, time_bucket(INTERVAL '1 minute', "timestamp") AS minute,
               approx_quantile(latency_ms, 0.5) AS p50, approx_quantile(latency_ms, 0.95) AS p95,
               approx_quantile(latency_ms, 0.99) AS p99
        FROM {src} GROUP BY ALL ORDER BY 1, 2""",
    "error_rate_per_source_hour": """
        SELECT source_id, time_bucket(INTERVAL '1 hour', "timestamp") AS hour,
               avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate, count(*) AS n
        FROM {src} GROUP BY ALL ORDER BY 1, 2""",
    "top_clients": """
        SELECT client_id, count(*) AS n FROM {src} GROUP BY client_id ORDER BY n DESC, client_id LIMIT 10""",
}

CHDB_QUERIES = {
    "latency_quantiles_per_version_minute": """
        SELECT model_version, toStartOfMinute(timestamp) AS minute,
               quantiles(0.5, 0.95, 0.99)(latency_ms) AS q
        FROM {src} GROUP BY model_version, minute ORDER BY model_version, minute""",
    "error_rate_per_source_hour": """
        SELECT source_id, toStartOfHour(timestamp) AS hour,
               avg(status = 'error') AS error_rate, count() AS n
        FROM {src} GROUP BY source_id, hour ORDER BY source_id, hour""",
    "top_clients": """
        SELECT client_id, count() AS n FROM {src} GROUP BY client_id ORDER BY n DESC, client_id LIMIT 10""",
}


def ingest(db_path: str, jsonl: str) -> None:
    import duckdb

    if os.path.exists(db_path):
        os.remove(db_path)
    connection = duckdb.connect(db_path)
    connection.execute(f"CREATE TABLE inference AS SELECT * FROM read_ndjson('{jsonl}')")
    connection.execute("CHECKPOINT")
    count = connection.execute("SELECT count(*) FROM inference").fetchone()[0]
    connection.close()
    print(json.dumps({"rows": count, "bytes": os.path.getsize(db_path)}))


def timed(run, sql: str):
    seconds = []
    result = None
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = run(sql)
        seconds.append(time.perf_counter() - start)
    return seconds, result


def query(engine: str, parquet_glob: str) -> None:
    out = {"seconds": {}, "rows": {}, "median": {}}
    if engine == "duckdb":
        import duckdb

        connection = duckdb.connect()
        src = f"read_parquet('{parquet_glob}')"
        queries = DUCKDB_QUERIES
        run = lambda sql: connection.execute(sql).fetchall()
    elif engine == "chdb":
        import chdb

        src = f"file('{parquet_glob}', Parquet)"
        queries = CHDB_QUERIES
        run = lambda sql: chdb.query(sql, "CSV").bytes()
    else:
        raise SystemExit(f"unknown engine {engine}")
    for name, template in queries.items():
        seconds, result = timed(run, template.format(src=src))
        out["seconds"][name] = seconds
        out["median"][name] = statistics.median(seconds)
        out["rows"][name] = len(result) if isinstance(result, list) else result.count(b"\n")
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "ingest":
        ingest(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "query":
        query(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
