#!/bin/sh
# make-layer.sh: assemble the civis-agent base layer, the file tree that the
# Dockerfile's final (FROM scratch) stage holds, into a directory.
#
#   docker/make-layer.sh --out DIR [--agent build/civis-agent] [--prefix /opt/civis-agent]
#                        [--ca-bundle /etc/ssl/certs/ca-certificates.crt] [--dlopen SONAME]...
#
# DIR becomes (DIR is what the image has at --prefix):
#   bin/civis-agent          static launcher (docker/launcher.c)
#   libexec/civis-agent      the agent, stripped
#   lib/                     every shared library the agent needs, as ldd
#                            lists them (transitively, libc and the loader
#                            included), plus libgcc_s (glibc dlopens it)
#   etc/ssl/certs/ca-certificates.crt   fallback CA bundle (lib/src/tls.c)
#   share/doc/civis-agent/   licenses of what is bundled, and the manifest
# Called by `make layer` (mk/layer.mk) and by docker/Dockerfile, so the tree
# tested here without a Docker engine is the tree the image ships.
# Environment: CC_STATIC overrides the launcher's compiler (default musl-gcc
# if present, else cc -static); STRIP (default strip).
set -eu

out= agent=build/civis-agent prefix=/opt/civis-agent
ca=/etc/ssl/certs/ca-certificates.crt dlopen=
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "make-layer: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--out) out=${2:?}; shift 2 ;;
	--agent) agent=${2:?}; shift 2 ;;
	--prefix) prefix=${2:?}; shift 2 ;;
	--ca-bundle) ca=${2:?}; shift 2 ;;
	--dlopen) dlopen="$dlopen ${2:?}"; shift 2 ;;
	*) die "unknown argument: $1" ;;
	esac
done
[ -n "$out" ] || die "--out DIR is required"
[ -x "$agent" ] || die "no agent binary at $agent (run make first)"
[ -r "$ca" ] || die "no CA bundle at $ca (install ca-certificates)"
case $prefix in /*) ;; *) die "--prefix must be absolute" ;; esac
command -v ldd >/dev/null || die "ldd is missing (libc-bin)"

# The loader the agent was linked for (PT_INTERP), as ldd shows it: the
# line with an absolute path and no "=>".
interp=$(ldd "$agent" | awk '$1 ~ /^\// && $2 !~ /=>/ { print $1; exit }')
[ -n "$interp" ] || die "$agent is not a dynamically linked ELF program"
loader=$(basename "$interp")

if [ -n "${CC_STATIC:-}" ]; then
	cc_static=$CC_STATIC
elif command -v musl-gcc >/dev/null 2>&1; then
	cc_static=musl-gcc
else
	cc_static=${CC:-cc}
fi

rm -rf "$out"
mkdir -p "$out/bin" "$out/libexec" "$out/lib" "$out/etc/ssl/certs" \
	"$out/share/doc/civis-agent/third-party"

# 1. the launcher, static: it must run where there is no libc at all
$cc_static -static -Os -s -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE \
	-DCIVIS_PREFIX="\"$prefix\"" -DCIVIS_LOADER="\"$loader\"" \
	-o "$out/bin/civis-agent" "$here/launcher.c"
if ldd "$out/bin/civis-agent" >/dev/null 2>&1 &&
   ! ldd "$out/bin/civis-agent" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
	die "the launcher came out dynamically linked"
fi

# 2. the agent
cp "$agent" "$out/libexec/civis-agent"
${STRIP:-strip} --strip-unneeded "$out/libexec/civis-agent"
chmod 0755 "$out/libexec/civis-agent"

# 3. its libraries: "name => /path (addr)" lines, and the loader's own line;
# plus each library the agent dlopen()s on first use (--dlopen SONAME: not in
# its ldd) with that library's own closure
ldd "$agent" > "$out/lib/.ldd"
for so in $dlopen; do
	path=$(ldconfig -p | awk -v so="$so" '$1 == so && /x86-64/ { print $NF; exit }')
	[ -n "$path" ] || path=$(ldconfig -p | awk -v so="$so" '$1 == so { print $NF; exit }')
	[ -n "$path" ] || die "cannot find $so (ldconfig -p)"
	echo "	$so => $path (0)" >> "$out/lib/.ldd"
	ldd "$path" >> "$out/lib/.ldd"
done
if grep -q 'not found' "$out/lib/.ldd"; then
	cat "$out/lib/.ldd" >&2
	die "unresolved libraries"
fi
awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 } $1 ~ /^\// && $2 !~ /=>/ { n = split($1, p, "/"); print p[n], $1 }' \
	"$out/lib/.ldd" | LC_ALL=C sort -u -k1,1 > "$out/lib/.list"
gcc_s=$(${CC:-cc} -print-file-name=libgcc_s.so.1 2>/dev/null || true)
case $gcc_s in
/*) [ -e "$gcc_s" ] && ! grep -q '^libgcc_s.so.1 ' "$out/lib/.list" &&
	echo "libgcc_s.so.1 $gcc_s" >> "$out/lib/.list" ;;
esac
while read -r name path; do
	cp -L "$path" "$out/lib/$name"
	chmod 0644 "$out/lib/$name"
done < "$out/lib/.list"
[ -f "$out/lib/$loader" ] || die "the loader $loader was not collected"
chmod 0755 "$out/lib/$loader"

# 4. the fallback CA bundle
cp -L "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"

# 5. licenses of the bundled Debian packages (when dpkg can say which)
doc=$out/share/doc/civis-agent
if command -v dpkg-query >/dev/null 2>&1; then
	pkgs=
	while read -r name path; do
		real=$(readlink -f "$path")
		for p in "$path" "$real" "${real#/usr}" "/usr$real"; do
			pkg=$(dpkg-query -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1) || pkg=
			[ -n "$pkg" ] && break
		done
		[ -n "$pkg" ] && pkgs="$pkgs $pkg"
	done < "$out/lib/.list"
	real=$(readlink -f "$ca")
	pkg=$(dpkg-query -S "$real" 2>/dev/null | head -n 1 | cut -d: -f1) || pkg=
	pkgs="$pkgs ${pkg:-ca-certificates}"
	for pkg in $(echo "$pkgs" | tr ' ' '\n' | sort -u); do
		f=/usr/share/doc/$pkg/copyright
		[ -r "$f" ] && cp "$f" "$doc/third-party/$pkg.copyright"
		v=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || v=unknown
		echo "$pkg $v" >> "$doc/third-party/PACKAGES"
	done
fi
[ -r "$here/../LICENSE" ] && cp "$here/../LICENSE" "$doc/LICENSE"

# 6. the manifest: every file, its mode, size and SHA-256
rm -f "$out/lib/.ldd" "$out/lib/.list"
(cd "$out" && find . -type f ! -name MANIFEST | LC_ALL=C sort | while read -r f; do
	printf '%s %s %s %s\n' "$(stat -c %a "$f")" "$(stat -c %s "$f")" \
		"$(sha256sum < "$f" | cut -d' ' -f1)" "${f#./}"
done) > "$doc/MANIFEST"

echo "make-layer: $out: $(du -sb "$out" | cut -f1) bytes," \
	"$(ls "$out/lib" | wc -l) libraries, loader $loader, launcher $(stat -c %s "$out/bin/civis-agent") bytes ($cc_static)"
