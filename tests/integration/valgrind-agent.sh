#!/bin/sh
# The agent under valgrind memcheck: any error or leak makes it exit 99,
# which the integration tests see as a wrong exit status.
exec valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --trace-children=no --suppressions="@SUPP@" \
    "@AGENT@" "$@"
