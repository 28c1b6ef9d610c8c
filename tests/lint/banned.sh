#!/usr/bin/env bash
# Fails on calls that have no place in this code base (STYLE.md, practice 6):
# sprintf, vsprintf, strcpy, strcat, atoi, atol, gets, and any strtol family
# call whose end pointer is NULL (nothing checks what was parsed).
set -u
status=0
for f in "$@"; do
	# Strip comments and string literals crudely: enough for our code.
	hits=$(sed -e 's://.*$::' "$f" | grep -nE '(^|[^_a-zA-Z0-9])(v?sprintf|strcpy|strcat|atoi|atol|atoll|gets)[[:space:]]*\(' || true)
	if [ -n "$hits" ]; then
		echo "$f: banned call:"; echo "$hits"; status=1
	fi
	hits=$(grep -nE 'strto(l|ul|ll|ull|imax|umax|d)[[:space:]]*\([^,]*,[[:space:]]*NULL' "$f" || true)
	if [ -n "$hits" ]; then
		echo "$f: strtol-family call without an end pointer:"; echo "$hits"; status=1
	fi
done
[ $status -eq 0 ] && echo "banned calls: none in $# files"
exit $status
