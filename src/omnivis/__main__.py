import sys

from omnivis.cli import main

sys.exit(main())
