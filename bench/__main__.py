"""``python -m bench``: the serving benchmark (bench/serving_bench.py); ``--help`` lists its options."""

from bench.serving_bench import run

if __name__ == "__main__":
    run()
