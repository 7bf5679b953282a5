import sys

from extmem.cli._main import main

sys.exit(main())
