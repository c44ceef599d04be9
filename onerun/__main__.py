"""``python -m onerun``."""

from onerun.entry import main

main()
