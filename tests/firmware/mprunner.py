# Runs inside the MicroPython Unix port: imports one test module and runs
# each test_* function in it, printing one result line per test for the
# pytest plugin in tests/conftest.py to collect.
import sys

try:
    import traceback  # noqa: F401  (not in every build)
except ImportError:
    traceback = None


def main():
    modname = sys.argv[1]
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    for name in names:
        try:
            getattr(mod, name)()
        except Exception as e:  # report and carry on with the next test
            sys.print_exception(e)
            print("GVTEST FAIL %s %s: %s" % (name, type(e).__name__, e))
        else:
            print("GVTEST PASS %s" % name)
    print("GVTEST DONE %d" % len(names))


main()
