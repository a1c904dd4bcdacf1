from asyncopy.cli import run

run()
