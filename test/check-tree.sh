#!/usr/bin/env bash
# Keeps build output out of the repository: no tracked file is an executable or shared object
# (every clone would carry it), and what `go build ./cmd/X` or `go build ./test/cmd/X` leaves in
# the root is ignored. The BPF objects bpf2go commits are relocatable ELF, which is allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  # ELF magic, then e_type at offset 16: 2 is an executable, 3 a shared object or PIE.
  if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
    case "$(od -An -j16 -N1 -tu1 "$f" | tr -d ' ')" in
      2|3) echo "check-tree: $f is a committed binary: remove it (git rm --cached) and ignore it"; rc=1 ;;
    esac
  fi
done < <(git ls-files -z)
for dir in cmd/*/ test/cmd/*/; do
  name=$(basename "$dir")
  if ! git check-ignore -q --no-index "$name"; then
    echo "check-tree: ./$name (what go build ./$dir leaves in the root) is not in .gitignore"; rc=1
  fi
done
exit $rc
