from stream.cli import main
import sys

sys.exit(main())
