"""``python -m vitrain.sweep``: the command-line tool in ``vitrain/tools/sweep.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.sweep", run_name="__main__")
