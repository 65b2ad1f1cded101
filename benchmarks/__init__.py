"""Speed benchmark of the engine and the bot against the classic SER tutorial recipe.

Run it from the repository root::

    python -m benchmarks.run            # full run (about 10-20 min on 2 cores)
    python -m benchmarks.run --quick    # smoke run, under a minute once the reference model is cached

It prints Markdown tables and writes JSON (default ``reports/benchmark.json``).
See ``benchmarks/README.md`` for what each case measures and how threads are set.

Modules
-------
reference
    The tutorial recipe re-implemented as the baseline (pydub decode, per-feature
    librosa calls, an MLP with the tutorial's hyper-parameters).
clips
    Test recordings made with ffmpeg from RAVDESS clips (Ogg/Opus voice notes).
timing
    Interleaved timing with warm-up, summary statistics, machine description.
cases
    The engine-versus-reference cases (latency, clip lengths, throughput,
    cold start, retrain).
bot_e2e
    The bot process over the fake Discord: end-to-end latency and peak RSS.
run
    The command line: runs the cases, prints the tables, writes the JSON.
"""
