"""Run the README's Python example (the first ```python block of its "## Python" section), so the
README cannot drift from the package. Usage: python readme_example.py README.md"""

import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
print(f"readme example: {len(code.strip().splitlines())} lines")
exec(compile(code, "README.md (## Python)", "exec"), {"__name__": "__main__"})
