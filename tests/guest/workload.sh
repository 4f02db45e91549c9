# The guest workload (busybox ash, sourced by init.sh with LABELS, MB, FILES, TREE, TAR set).
# Each phase runs on every mount (/mnt/LABEL) in turn before the next phase starts, so the
# servers are compared minutes, not a whole run, apart. Prints `TIME <label> <step> <secs>`
# per timed step and `CHECK ok|FAIL <label>: <name>` per check; content is compared with
# md5sum against a copy kept in the guest's tmpfs.

now() { cut -d' ' -f1 /proc/uptime; }
timed() { # step cmd... : run, print TIME, and CHECK that the command itself succeeded
  _n=$1; shift; _s=$(now)
  if "$@"; then _r=ok; else _r=FAIL; fi
  echo "TIME $L $_n $(awk -v s="$_s" -v e="$(now)" 'BEGIN{printf "%.2f", e-s}')"
  [ $_r = ok ] || echo "CHECK FAIL $L: $_n (exit status)"
}
check() { # name cmd... : CHECK ok if the command succeeds
  _n=$1; shift
  if "$@" >/dev/null; then echo "CHECK ok $L: $_n"; else echo "CHECK FAIL $L: $_n"; fi
}
is() { [ "$1" = "$2" ] || { echo "  $L $3: got '$1', want '$2'" >&2; return 1; }; }
md5() { md5sum "$1" | cut -d' ' -f1; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# md5 of every file under a tree, by relative path: equal trees give equal digests
treesum() { (cd "$1" && find . -type f | sort | xargs md5sum | md5sum | cut -d' ' -f1); }
each() { for L in $LABELS; do M=/mnt/$L; "$@"; done; }

# --- a big file: each MiB distinct (its index, then the same 1 MiB of random bytes) ---
head -c 1048576 /dev/urandom > /tmp/chunk
i=0; while [ $i -lt "$MB" ]; do printf '%08d' $i; head -c 1048568 /tmp/chunk; i=$((i+1)); done > /tmp/big
rm /tmp/chunk
BIG=$(md5 /tmp/big)
big() {
  timed "write_${MB}MiB" dd if=/tmp/big of=$M/big bs=1M conv=fsync 2>/dev/null
  drop
  timed "read_${MB}MiB" dd if=$M/big of=/tmp/back bs=1M 2>/dev/null
  check "big md5" is "$(md5 /tmp/back)" "$BIG" md5
  check "big size" is "$(stat -c %s $M/big)" $((MB * 1048576)) size
  rm /tmp/back $M/big
}
each big
rm /tmp/big

# --- small files ---
mk_small() { i=1; while [ $i -le "$FILES" ]; do echo "hello $i" > $M/small/f$i || return 1; i=$((i+1)); done; }
stat_small() { stat -c '%s %h %F' $M/small/* > /tmp/stat.out; }
ls_small() { ls -l $M/small > /tmp/ls.out; }
small() {
  mkdir $M/small
  timed "create_$FILES" mk_small
  drop
  timed "stat_$FILES" stat_small
  check "stat count" is "$(wc -l < /tmp/stat.out)" "$FILES" lines
  check "stat fields" is "$(sort -u /tmp/stat.out | grep -c -v '^8 1 regular file$\|^9 1 regular file$\|^1[0-9] 1 regular file$')" 0 "odd stat lines"
  check "stat size f1" is "$(stat -c %s $M/small/f1)" 8 size
  timed "ls-l_$FILES" ls_small
  check "ls count" is "$(grep -c ' f[0-9]*$' /tmp/ls.out)" "$FILES" entries
  check "content f$FILES" is "$(cat $M/small/f$FILES)" "hello $FILES" content
  timed "rm_$FILES" rm -f $M/small/*
  check "rm leaves empty dir" is "$(ls -A $M/small | wc -l)" 0 entries
  rmdir $M/small
}
each small

# --- semantics: rename, link, symlink, chmod, truncate ---
semantics() {
  cd $M
  echo data > a
  check "rename" sh -c 'mv a b && [ ! -e a ] && [ "$(cat b)" = data ]'
  check "link nlink=2" sh -c 'ln b c && [ "$(stat -c %h b)" = 2 ] && [ "$(stat -c %i b)" = "$(stat -c %i c)" ]'
  check "unlink nlink=1" sh -c 'rm c && [ "$(stat -c %h b)" = 1 ]'
  check "symlink" sh -c 'ln -s b s && [ "$(readlink s)" = b ] && [ "$(cat s)" = data ] && [ -L s ]'
  check "chmod" sh -c 'chmod 640 b && [ "$(stat -c %a b)" = 640 ]'
  check "truncate grow" sh -c 'truncate -s 10000 b && [ "$(stat -c %s b)" = 10000 ]'
  check "truncate shrink" sh -c 'truncate -s 3 b && [ "$(cat b)" = dat ]'
  check "mkdir/rmdir" sh -c 'mkdir d && [ -d d ] && rmdir d && [ ! -e d ]'
  check "rename over" sh -c 'echo x > e && mv e b && [ "$(cat b)" = x ]'
  check "append" sh -c 'echo y >> b && [ "$(cat b)" = "$(printf "x\ny")" ]'
  check "unlinked gone" sh -c 'rm b s && [ -z "$(ls -A .)" ]'
  cd /
}
each semantics

# --- a wide tree (4 levels of 4 dirs: 340 dirs, a file in each) and a 40-deep path ---
mk_tree() { # dir depth
  [ "$2" -gt 0 ] || return 0
  for k in 1 2 3 4; do
    mkdir "$1/d$k" && echo "$1/d$k" > "$1/d$k/f" && mk_tree "$1/d$k" $(($2 - 1)) || return 1
  done
}
tree() {
  deep=$M/deep; i=0; while [ $i -lt 40 ]; do deep=$deep/level$i; i=$((i+1)); done
  mkdir $M/tree
  timed mkdir_tree mk_tree $M/tree 4
  timed find_tree sh -c "find $M/tree > /tmp/find.out"
  check "tree entries" is "$(wc -l < /tmp/find.out)" $((1 + 2 * (4 + 16 + 64 + 256))) lines
  check "tree file" is "$(cat $M/tree/d4/d3/d2/d1/f)" "$M/tree/d4/d3/d2/d1" content
  timed mkdir_deep40 mkdir -p $deep
  check "deep path" sh -c "echo deep > $deep/f && [ \"\$(cat $deep/f)\" = deep ]"
  timed rm_tree rm -rf $M/tree $M/deep
  check "tree removed" is "$(ls -A $M | wc -l)" 0 entries
}
[ "$TREE" = 1 ] && each tree

# --- tar of a source tree in and out: the guest's kernel modules and 100 generated files ---
tario() {
  timed tar_in tar xf /tmp/src.tar -C $M
  check "tar in: tree md5" is "$(treesum $M/src)" "$SRC" treesum
  drop
  timed tar_out sh -c "tar cf /tmp/out.tar -C $M src"
  mkdir /tmp/out && tar xf /tmp/out.tar -C /tmp/out
  check "tar out: tree md5" is "$(treesum /tmp/out/src)" "$SRC" treesum
  rm -rf /tmp/out /tmp/out.tar
  timed rm_src rm -rf $M/src
}
if [ "$TAR" = 1 ]; then
  mkdir -p /tmp/src/mods /tmp/src/gen
  cp /lib/modules/* /tmp/src/mods/
  j=0; while [ $j -lt 10 ]; do
    mkdir /tmp/src/gen/dir$j; k=0
    while [ $k -lt 10 ]; do seq $((j * 100 + k)) > /tmp/src/gen/dir$j/file$k.c; k=$((k+1)); done
    j=$((j+1))
  done
  SRC=$(treesum /tmp/src)
  (cd /tmp && tar cf /tmp/src.tar src) && rm -rf /tmp/src
  each tario
  rm /tmp/src.tar
fi
echo "WORKLOAD done"
