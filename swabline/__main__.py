import sys

from swabline.cli import main

sys.exit(main())
