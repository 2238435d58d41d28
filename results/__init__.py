"""Results: run folders into records, records into cells and rows, rows into tables, figures and reports.

    records      scan a tree of seed folders; each run named by its engine.runs.RunIdentity
    aggregate    seeds into cells, settings told apart, few-shot / base-to-novel / swept-key rows
    paper        the paper's published numbers and names
    tables       make_tables: the paper's tables as text or CSV
    plots        plot_results: accuracy against K, base-to-novel bars, accuracy against one key
    reproduction from-scratch runs beside released checkpoints and the paper
    transfer     source x target tables of cross-dataset transfer
    seed_summary per-seed accuracy of one run folder (the reference's parse_test_res)
    files        atomic writes

The tools in tools/ are thin command lines over these modules.
"""
