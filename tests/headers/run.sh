#!/bin/sh
# tests/headers/run.sh OUTDIR STATICLIB HEADER...: every public header must
#   - compile alone in an otherwise empty C file (C11, -Werror, strict);
#   - reach no libcurl header (gcc -H lists what a file pulls in);
#   - name no libcurl type, comments aside;
#   - carry no CIVIS_UNITTEST block and no civis__ (internal) name;
#   - do the same as C++ (extern "C"), when a C++ compiler is there.
# Then a C++ program calls the library through civis.h and links against
# STATICLIB: the extern "C" blocks give C linkage.
# CC, CXX and LINK_LIBS (what libcivis.a needs) come from the environment.
set -u
out=$1 staticlib=$2
shift 2
cc=${CC:-cc}
cxx=${CXX:-c++}
cwarn="-std=c11 -Wall -Wextra -Wpedantic -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes"
# no -Wshadow in C++: it flags a function named like a struct
# (civis_logq_stats), which C allows and the headers do on purpose
xwarn="-std=c++11 -Wall -Wextra -Wpedantic -Werror"
curl_types='(^|[^A-Za-z0-9_])(CURL|CURLM|CURLSH|CURLU|CURLcode|CURLMcode|CURLSHcode|CURLUcode|CURLoption|CURLINFO|curl_off_t|curl_socket_t|curl_mime|curl_mimepart|curl_slist|curl_easy|curl_multi)([^A-Za-z0-9_]|$)'
mkdir -p "$out" || exit 1
have_cxx=0
if command -v "$cxx" >/dev/null 2>&1; then have_cxx=1; fi
fail=0 n=0
for h in "$@"; do
	name=${h##*/}
	base=${name%.h}
	src=$out/$base.c
	n=$((n + 1))
	printf '#include "civis/%s"\n' "$name" > "$src" || exit 1
	if ! $cc $cwarn -Ilib/include -fsyntax-only "$src"; then
		echo "header-test: civis/$name does not compile alone as C11 with -Werror"
		fail=1
	fi
	if $cc -std=c11 -Ilib/include -E -H -o /dev/null "$src" 2>&1 | grep -q '/curl/'; then
		echo "header-test: civis/$name includes a libcurl header:"
		$cc -std=c11 -Ilib/include -E -H -o /dev/null "$src" 2>&1 | grep '/curl/' | sed 's/^/    /'
		fail=1
	fi
	if $cc -fpreprocessed -dD -E -P "$h" 2>/dev/null | grep -En "$curl_types" > "$out/$base.curl"; then
		echo "header-test: civis/$name names a libcurl type:"
		sed 's/^/    /' "$out/$base.curl"
		fail=1
	fi
	if grep -n 'CIVIS_UNITTEST\|civis__' "$h" > "$out/$base.private"; then
		echo "header-test: civis/$name carries a test hook or an internal name:"
		sed 's/^/    /' "$out/$base.private"
		fail=1
	fi
	if [ $have_cxx = 1 ] && ! $cxx $xwarn -Ilib/include -x c++ -fsyntax-only "$src"; then
		echo "header-test: civis/$name does not compile alone as C++11 with -Werror"
		fail=1
	fi
done
if [ $have_cxx = 1 ]; then
	cat > "$out/link.cc" <<'CXX'
// C linkage through the extern "C" blocks: these calls resolve against
// the C library only if the headers declared them so.
#include <cstdio>
#include <cstring>
#include "civis/civis.h"
#include "civis/loop.h"
int main()
{
	civis_loop *loop = nullptr;
	if (civis_loop_new(&loop) != CIVIS_OK)
		return 1;
	civis_loop_free(loop);
	if (std::strcmp(civis_strerror(CIVIS_ENOMEM), "out of memory") != 0)
		return 1;
	std::printf("%s\n", civis_version());
	return 0;
}
CXX
	if ! $cxx $xwarn -Ilib/include -o "$out/link" "$out/link.cc" "$staticlib" ${LINK_LIBS:--lcjson -lz -ldl}; then
		echo "header-test: a C++ program does not link against $staticlib"
		fail=1
	elif ! "$out/link" > "$out/link.out"; then
		echo "header-test: the C++ program linked against $staticlib failed"
		fail=1
	fi
	lang="C11 and C++11"
else
	echo "header-test: no C++ compiler ($cxx): C++ checks skipped"
	lang="C11 only"
fi
if [ $n = 0 ]; then
	echo "header-test: no header given"
	exit 1
fi
if [ $fail = 0 ]; then
	echo "header-test: $n public headers compile alone ($lang), no libcurl header or type, no test hook"
fi
exit $fail
