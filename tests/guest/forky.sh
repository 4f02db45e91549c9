#!/usr/bin/env bash
# Fetch a newer QEMU (qemu-system-x86) and virtiofsd from Debian's "forky" suite, with their
# whole shared-library closure (libc6 included), unpack them under $FORKY (outside the
# checkout: nothing is installed into the system, the system's apt set-up is not touched) and
# write wrappers that run them through the unpacked dynamic loader:
#
#   tests/guest/forky.sh                       ->  last line of stdout: $FORKY/bin
#   QEMU=$(tests/guest/forky.sh | tail -1)/qemu-system-x86_64 tests/guest/boot.sh
#
#   $FORKY/bin/qemu-system-x86_64   QEMU_MODULE_DIR and -L (the unpacked firmware dirs) set
#   $FORKY/bin/virtiofsd
#
# apt runs on a private configuration (APT_CONFIG=$FORKY/apt/apt.conf: its own source list,
# state, cache and an empty dpkg status, so every dependency is downloaded); the mirror is the
# one the system's apt sources use for this release, found at run time. A second run with
# the cache complete only checks the wrappers and prints the paths.
#
#   FORKY   cache dir [/var/tmp/co9p-forky]: debs/ (the .debs), root/ (unpacked), bin/, apt/
#   SUITE   Debian suite [forky]          PKGS  packages [qemu-system-x86 virtiofsd]
#   MIRROR  archive URI [the system's apt source for its release, e.g. http://HOST/debian]
#
# Host tools: apt-get, dpkg-deb, flock. Exit status 77 (like kit.sh): the packages cannot be
# fetched or run here (no apt, no route to the mirror, a package missing) -- callers report a
# skip; the reason is on stderr.
set -euo pipefail
FORKY=${FORKY:-/var/tmp/co9p-forky}
SUITE=${SUITE:-forky}
PKGS=${PKGS:-qemu-system-x86 virtiofsd}
ROOT=$FORKY/root BIN=$FORKY/bin A=$FORKY/apt
skip() { echo "forky: cannot provide $SUITE's QEMU: $*" >&2; exit 77; }
mkdir -p "$FORKY" || skip "cannot create $FORKY"
FORKY=$(cd "$FORKY" && pwd -P) && ROOT=$FORKY/root BIN=$FORKY/bin A=$FORKY/apt
STAMP="$SUITE: $PKGS"

# The wrappers run and QEMU is 11 or newer. Prints the two versions.
works() {
  [ -x "$BIN/qemu-system-x86_64" ] && [ -x "$BIN/virtiofsd" ] || return 1
  local q v
  q=$("$BIN/qemu-system-x86_64" --version 2>&1 | head -1) || return 1
  [[ $q =~ version\ (1[1-9]|[2-9][0-9])\. ]] || { echo "forky: $q: not 11 or newer" >&2; return 1; }
  v=$("$BIN/virtiofsd" --version 2>&1 | head -1) || return 1
  echo "forky: $q"
  echo "forky: $v"
}
done_already() {
  [ "$(cat "$ROOT/.complete" 2>/dev/null)" = "$STAMP" ] && works
}
report() {
  echo "forky: root $ROOT ($(du -sh "$FORKY" 2>/dev/null | cut -f1) in $FORKY)"
  echo "$BIN"
}
if done_already; then report; exit 0; fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null && command -v flock >/dev/null \
  || skip "needs apt-get, dpkg-deb and flock"
exec 9> "$FORKY/.lock" && flock -w 1800 9 || skip "cannot lock $FORKY/.lock"
if done_already; then report; exit 0; fi   # another run finished it meanwhile

# 1. The mirror: the URI of a `deb` source of the system whose suite is its release's codename.
system_mirror() {
  local code f
  code=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [ -n "$code" ] || return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    case $f in
      *.sources)  # deb822 stanzas
        awk -v code="$code" 'BEGIN { RS = ""; FS = "\n" }
          { t = u = s = ""; on = "yes"
            for (i = 1; i <= NF; i++) { l = $i; if (l ~ /^[ \t]*#/) continue
              k = tolower(l); sub(/:.*/, "", k); v = l; sub(/^[^:]*:[ \t]*/, "", v)
              if (k == "types") t = v; else if (k == "uris") u = v
              else if (k == "suites") s = v; else if (k == "enabled") on = tolower(v) }
            if (on != "no" && (" " t " ") ~ / deb / && (" " s " ") ~ (" " code " ")) {
              split(u, w, /[ \t]+/); print w[1] } }' "$f" ;;
      *)  # one-line format: deb [options] URI suite components
        awk -v code="$code" '$1 == "deb" { i = 2
            if ($i ~ /^\[/) while ($i !~ /\]$/ && i < NF) i++
            if ($i ~ /^\[/ || $i ~ /\]$/) i++
            if ($(i + 1) == code) print $i }' "$f" ;;
    esac
  done
}
FROM="the system's mirror"
[ -z "${MIRROR:-}" ] || FROM=$MIRROR
MIRROR=${MIRROR:-$(system_mirror | grep -E '^https?://' | head -1)}
[ -n "$MIRROR" ] || skip "no http(s) 'deb' source for this release in /etc/apt/sources.list*"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || skip "no $KEYRING (debian-archive-keyring)"

# 2. A private apt: nothing of /etc/apt but the trusted keyring and the system's proxy and
# Release-date settings (a mirror that is a dated snapshot needs Check-Valid-Until "false"),
# its own state and cache, an empty dpkg status (so the whole closure is "to install"),
# downloads into $FORKY/debs.
SYSCONF=$(env -u APT_CONFIG apt-config dump 2>/dev/null \
  | grep -iE '^Acquire::(Check-Valid-Until|Check-Date|Max-FutureTime|https?::Proxy[^ ]*|ftp::Proxy) ' || true)
mkdir -p "$A"/{conf.d,sources.d,prefs.d,state/lists/partial,cache,log,empty/partial} "$FORKY/debs/partial"
: > "$A/status"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$A/sources.list"
cat > "$A/apt.conf" <<EOF
Dir::Etc::Parts "$A/conf.d";
Dir::Etc::Main "/dev/null";
Dir::Etc::SourceList "$A/sources.list";
Dir::Etc::SourceParts "$A/sources.d";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$A/prefs.d";
Dir::State "$A/state";
Dir::State::status "$A/status";
Dir::Cache "$A/cache";
Dir::Cache::archives "$FORKY/debs/";
Dir::Log "$A/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Acquire::Retries "2";
Acquire::http::Timeout "30";
Acquire::https::Timeout "30";
$SYSCONF
EOF
export APT_CONFIG=$A/apt.conf
[ "$(uname -m)" = x86_64 ] || skip "not an x86_64 host"

t0=$SECONDS
echo "forky: apt-get update ($SUITE main from $FROM) ..." >&2
timeout 900 apt-get -q update --error-on=any > "$A/update.log" 2>&1 \
  || skip "apt-get update of $SUITE failed: $(grep -E '^(E|W):' "$A/update.log" | head -3 | tr '\n' ' ')"
# The exact .deb files of the closure: --print-uris into an empty archive dir lists them all
# (into $FORKY/debs it would leave out those already there).
apt-get -q -y install --print-uris -o Dir::Cache::archives="$A/empty/" $PKGS > "$A/uris.log" 2>&1 \
  || skip "apt cannot resolve $PKGS in $SUITE: $(grep -E '^E:' "$A/uris.log" | head -3 | tr '\n' ' ')"
awk -F"'" '/^'"'"'/ { split($3, f, " "); print f[1] }' "$A/uris.log" > "$A/debs.list"
[ -s "$A/debs.list" ] || skip "apt listed no packages for $PKGS (see $A/uris.log)"
echo "forky: downloading $(wc -l < "$A/debs.list") packages into $FORKY/debs ..." >&2
timeout 1800 apt-get -q -y install --download-only $PKGS > "$A/download.log" 2>&1 \
  || skip "download failed: $(grep -E '^(E|W):' "$A/download.log" | head -3 | tr '\n' ' ')"
while read -r f; do [ -f "$FORKY/debs/$f" ] || skip "apt did not download $f"; done < "$A/debs.list"

# 3. Unpack into a fresh tree, then make any absolute symlink (/usr/share/... -> /usr/...)
# point inside it, relatively, not at the host's files.
rm -rf "$ROOT.new" "$ROOT"
mkdir -p "$ROOT.new"
while read -r f; do dpkg-deb -x "$FORKY/debs/$f" "$ROOT.new" || skip "dpkg-deb -x $f failed"; done < "$A/debs.list"
find "$ROOT.new" -type l -lname '/*' -print0 | while IFS= read -r -d '' l; do
  ln -sfnr "$ROOT.new$(readlink "$l")" "$l"
done
mv "$ROOT.new" "$ROOT"

# 4. The wrappers: the unpacked loader, the unpacked libraries only (no ld.so.cache, so a
# library missing from the closure shows as "not found", not as the host's copy).
LIB=$ROOT/usr/lib/x86_64-linux-gnu
LD=
for d in "$LIB" "$ROOT/lib/x86_64-linux-gnu" "$ROOT/usr/lib64" "$ROOT/lib64"; do
  [ -x "$d/ld-linux-x86-64.so.2" ] && { LD=$(realpath "$d/ld-linux-x86-64.so.2"); break; }
done
[ -n "$LD" ] || skip "no ld-linux-x86-64.so.2 in the unpacked libc6"
LP=$LIB
[ -d "$ROOT/lib/x86_64-linux-gnu" ] && [ ! -L "$ROOT/lib" ] && LP=$LP:$ROOT/lib/x86_64-linux-gnu
QEMU_BIN=$ROOT/usr/bin/qemu-system-x86_64
VFS_BIN=$ROOT/usr/libexec/virtiofsd
[ -x "$VFS_BIN" ] || VFS_BIN=$(find "$ROOT" -name virtiofsd -type f -perm -u+x | head -1)
[ -x "$QEMU_BIN" ] || skip "no qemu-system-x86_64 in the unpacked packages"
[ -x "$VFS_BIN" ] || skip "no virtiofsd in the unpacked packages"
for b in "$QEMU_BIN" "$VFS_BIN"; do
  bad=$("$LD" --inhibit-cache --library-path "$LP" --list "$b" 2>&1 | grep -E 'not found|=> /' | grep -v "=> $ROOT/" || true)
  [ -z "$bad" ] || skip "$(basename "$b"): libraries outside the closure: $bad"
done
FW=
for d in usr/share/qemu usr/share/seabios usr/lib/ipxe/qemu usr/share/ipxe; do
  [ -d "$ROOT/$d" ] && FW="$FW -L \"\$R/$d\""
done
mkdir -p "$BIN"
cat > "$BIN/qemu-system-x86_64" <<EOF
#!/bin/sh
# Written by tests/guest/forky.sh: $SUITE's QEMU, unpacked under R, run by its own loader.
R='$ROOT'
export QEMU_MODULE_DIR="\$R/usr/lib/x86_64-linux-gnu/qemu"
exec '$LD' --inhibit-cache --library-path '$LP' "\$R/${QEMU_BIN#"$ROOT"/}"$FW "\$@"
EOF
cat > "$BIN/virtiofsd" <<EOF
#!/bin/sh
# Written by tests/guest/forky.sh: $SUITE's virtiofsd, unpacked under R, run by its own loader.
R='$ROOT'
exec '$LD' --inhibit-cache --library-path '$LP' "\$R/${VFS_BIN#"$ROOT"/}" "\$@"
EOF
chmod +x "$BIN/qemu-system-x86_64" "$BIN/virtiofsd"
works || skip "the unpacked binaries do not run here (try $BIN/qemu-system-x86_64 --version)"
echo "$STAMP" > "$ROOT/.complete"
rm -rf "$A/state/lists" "$A/cache"   # indexes, apt's cache: a rebuild updates them anyway
echo "forky: fetched and unpacked $(wc -l < "$A/debs.list") packages in $((SECONDS - t0)) s" >&2
report
