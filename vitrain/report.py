"""``python -m vitrain.report``: the command-line tool in ``vitrain/tools/report.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.report", run_name="__main__")
