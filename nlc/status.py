"""Exit statuses of every ``nlc`` verb (documented in README.md, "Exit statuses").

=====  ==========================================================================
0      success
1      a check failed: the spec is invalid, ``compile --check`` found a graph break,
       a search trial or a benchmark unit errored
2      bad input: a file or folder that cannot be used (missing, unreadable, too
       large, truncated checkpoint, shape mismatch), or a wrong command line
3      the run stopped on a non-finite value (the message names the level)
130    interrupted (Ctrl-C)
=====  ==========================================================================
"""
OK = 0
FAILED = 1
BAD_INPUT = 2
NON_FINITE = 3
INTERRUPTED = 130
