import sys

argv = sys.argv[1:]
if argv[:1] == ["compare"]:
    from benchmarks.compare import main as compare

    sys.exit(compare(argv[1:]))
if argv[:1] == ["profile"]:
    from benchmarks.profile_hot_path import main as profile

    sys.exit(profile(argv[1:]))

from benchmarks.run import main  # noqa: E402 - B1-B6, as before

sys.exit(main(argv))
