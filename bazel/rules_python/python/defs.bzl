"""The native Python rules under rules_python's names, for a checkout without rules_python."""

py_binary = native.py_binary
py_library = native.py_library
py_test = native.py_test
