"""python -m varsling"""

from varsling.cli import app

app()
