"""python -m meteorpi_server: the meteorpi command."""
from .cli import main

main(prog_name="meteorpi")
