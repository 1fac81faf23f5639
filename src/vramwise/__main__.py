import sys

from vramwise.cli import main

sys.exit(main())
