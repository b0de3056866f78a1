"""``python -m vitrain.generate``: the command-line tool in ``vitrain/tools/generate.py``."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("vitrain.tools.generate", run_name="__main__")
