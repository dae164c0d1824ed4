"""Run pytest against an AddressSanitizer + UndefinedBehaviorSanitizer build of posert._C
(``make sanitize``): ``python -m tests.run_sanitized SITE [pytest args]``, where SITE holds a
copy of the ``posert`` package with the sanitized ``_C`` module in it, and the interpreter runs
with libasan preloaded. The editable install's import redirect is taken out so ``posert`` comes
from SITE; any sanitizer report aborts the run with a non-zero exit."""

import sys


def main() -> int:
    site, args = sys.argv[1], sys.argv[2:]
    sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
    sys.path.insert(0, site)
    import posert._C

    if not posert._C.__file__.startswith(site):
        print(f"posert._C comes from {posert._C.__file__}, not {site}", file=sys.stderr)
        return 2
    print(f"sanitized posert._C: {posert._C.__file__}")
    import pytest

    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
