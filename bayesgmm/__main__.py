"""``python -m bayesgmm``: the same command line as the ``bayesgmm`` script."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C before the command line could take it over (see .cli)
    sys.stderr.write("bayesgmm: interrupted\n")  # .cli.interrupt.MESSAGE, maybe not imported yet
    sys.exit(130)

sys.exit(main())
