"""The README's table of bad inputs and faults and the tests: one to one.

Each row of the tables under "Bad input and faults" has an ID (`D01`, `R01`, `E01`,
`S01`, ...) and names its test; each such test carries `@pytest.mark.fault("<ID>")`.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = re.compile(r"^\| *([A-Z]\d\d) *\|(.*)\| *`?tests/([\w/]+\.py)::(\w+)`? *\|\s*$")
MARK = re.compile(r"@pytest\.mark\.fault\(\s*[\"']([A-Z]\d\d)[\"']\s*\)\s*\n(?:@.*\n)*\s*def (\w+)")


def _table_rows():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Bad input and faults", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if re.match(r"^\| *[A-Z]\d\d *\|", line)]
    assert all(rows), [line for line in section.splitlines() if re.match(r"^\| *[A-Z]\d\d", line)]
    return [(m.group(1), m.group(3), m.group(4), m.group(2)) for m in rows]


def _marked_tests():
    marked = []
    folder = os.path.join(ROOT, "tests")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                for match in MARK.finditer(handle.read()):
                    marked.append((match.group(1), name, match.group(2)))
    return marked


def test_every_row_has_one_test_and_every_test_one_row():
    rows = _table_rows()
    marked = _marked_tests()
    row_ids = [r[0] for r in rows]
    test_ids = [m[0] for m in marked]
    assert len(row_ids) >= 40, f"{len(row_ids)} rows; the issue asks for at least 40"
    assert len(set(row_ids)) == len(row_ids), sorted(i for i in row_ids if row_ids.count(i) > 1)
    assert len(set(test_ids)) == len(test_ids), sorted(i for i in test_ids if test_ids.count(i) > 1)
    assert set(row_ids) == set(test_ids), set(row_ids) ^ set(test_ids)
    tests = {m[0]: (m[1], m[2]) for m in marked}
    for row_id, path, test, description in rows:
        assert tests[row_id] == (os.path.basename(path), test), (row_id, path, test, tests[row_id])
        assert os.path.exists(os.path.join(ROOT, "tests", os.path.basename(path))), path
        case, _, message = description.partition("|")
        assert case.strip() and message.strip(), row_id
