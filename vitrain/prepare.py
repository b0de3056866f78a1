"""``python -m vitrain.prepare``: the command-line tool in ``vitrain/tools/prepare.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.prepare", run_name="__main__")
