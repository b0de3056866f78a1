"""The command-line tools, each a thin front end (arguments, messages, exit status) over library
code of the layers:

- `prepare`: streaming shards from image folders, COCO files or text (``vitrain.data``);
- `segment`: SAM masks for an image, from prompts or for every object (``vitrain.inference``);
- `generate`: text from a GPT checkpoint (``vitrain.inference``);
- `sweep`: a multirun's table (``vitrain.results``);
- `report`: tables and plots of runs averaged over seeds (``vitrain.results``);
- `baseline`: what word counts alone achieve on text-classification data (``vitrain.results``).

Each runs as ``python -m vitrain.<tool>`` (a 5-line module at the package root forwards to the
tool here); ``main(argv)`` is the tool as a function.
"""
