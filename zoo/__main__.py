import sys

from zoo.apps.cli import main

sys.exit(main())
