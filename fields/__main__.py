"""``python -m fields`` (and ``torchrun ... -m fields fit ...``): the `fields` command."""

from fields.cli import main

main()
