"""The `pyctr` command line: click commands that parse and print; the work is in pyctr.*."""
