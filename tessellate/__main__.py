import sys

from tessellate.cli import main

sys.exit(main())
