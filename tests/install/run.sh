#!/bin/sh
# tests/install/run.sh ROOT VERSION OUTDIR: ROOT holds `make install
# DESTDIR=ROOT PREFIX=/usr`. Check what was installed, then build
# tests/install/prog.c with nothing but `pkg-config civis` (pointed at ROOT
# through PKG_CONFIG_SYSROOT_DIR/PKG_CONFIG_PATH), against the shared and
# the static library, and run both.
set -u
root=$1 version=$2 out=$3
cc=${CC:-cc}
fail=0
mkdir -p "$out" || exit 1
say() { echo "install-test: $*"; fail=1; }

# only public headers, and none of them reaches libcurl
for f in "$root"/usr/include/civis/*; do
	case ${f##*/} in
	*_int.h|*internal*|dl.h|sha256.h) say "private header installed: ${f##*/}" ;;
	esac
done
if grep -ln '#[[:space:]]*include[[:space:]]*<curl/' "$root"/usr/include/civis/*.h; then
	say "an installed header includes a libcurl header"
fi
for f in lib/include/civis/*.h; do
	cmp -s "$f" "$root/usr/include/civis/${f##*/}" || say "${f##*/} not installed as it is"
done
[ -x "$root/usr/bin/civis-agent" ] || say "no usr/bin/civis-agent"
[ -f "$root/usr/lib/libcivis.a" ] || say "no usr/lib/libcivis.a"
[ -f "$root/usr/lib/libcivis.so.$version" ] || say "no usr/lib/libcivis.so.$version"
[ $fail = 0 ] || exit 1

PKG_CONFIG_SYSROOT_DIR=$root
PKG_CONFIG_PATH=$root/usr/lib/pkgconfig
export PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH
v=$(pkg-config --modversion civis) || { echo "install-test: pkg-config finds no civis"; exit 1; }
[ "$v" = "$version" ] || say "pkg-config says version $v, the build $version"
cflags=$(pkg-config --cflags civis) || exit 1
libs=$(pkg-config --libs civis) || exit 1
slibs=$(pkg-config --static --libs civis) || exit 1
case " $cflags " in *" -I$root/usr/include "*) ;; *) say "cflags do not name $root/usr/include: $cflags" ;; esac

want_out() {
	grep -qx "civis $version" "$1" || say "$2 did not print the version"
	grep -qx "endpoint http://127.0.0.1:9/api/ job 12 run 34" "$1" ||
		say "$2 did not parse the configuration"
	grep -qx "refused: CIVIS_RUN_ID is not a positive integer: 'not-a-number'" "$1" ||
		say "$2 did not refuse the bad configuration with its one line"
}

# shared: the program finds libcivis.so in ROOT
# shellcheck disable=SC2086
if $cc -std=c11 -Wall -Wextra -Wpedantic -Werror $cflags -o "$out/prog-shared" \
	tests/install/prog.c $libs; then
	if LD_LIBRARY_PATH=$root/usr/lib "$out/prog-shared" > "$out/shared.out"; then
		want_out "$out/shared.out" "the shared build"
		LD_LIBRARY_PATH=$root/usr/lib ldd "$out/prog-shared" | grep -q "$root/usr/lib/libcivis.so" ||
			say "the shared build did not load ROOT's libcivis.so"
	else
		say "the shared build failed: $(cat "$out/shared.out")"
	fi
else
	say "cannot build against the installed headers and pkg-config civis --libs"
fi

# static: libcivis.a plus what --static adds (Requires.private, Libs.private)
slibs=$(echo "$slibs" | sed 's/-lcivis\b/-l:libcivis.a/')
# shellcheck disable=SC2086
if $cc -std=c11 -Wall -Wextra -Wpedantic -Werror $cflags -o "$out/prog-static" \
	tests/install/prog.c $slibs; then
	if "$out/prog-static" > "$out/static.out"; then
		want_out "$out/static.out" "the static build"
		ldd "$out/prog-static" | grep -q libcivis && say "the static build still loads libcivis.so"
	else
		say "the static build failed: $(cat "$out/static.out")"
	fi
else
	say "cannot link libcivis.a with pkg-config --static --libs civis"
fi
if [ $fail = 0 ]; then
	echo "install-test: the installed headers and pkg-config civis build a program, shared and static, that runs ($(cat "$out/shared.out" | tail -1))"
fi
exit $fail
