#!/usr/bin/env bash
# Runs Linux 7.2's own iommufd selftests against uiommu and compares the result with
# conformance/passing.txt (the cases that must pass).
#
# Usage: scripts/conformance.sh [--update]
#   --update   rewrite conformance/passing.txt to the set of cases passing now
#
# Needs ../shared/conformance (beside the repository root; override with UIOMMU_SHARED=DIR),
# gcc and libcap-dev. Outputs go to target/conformance/: the selftest binaries (bin/), the
# TAP output of each (*.tap) and its stderr (*.stderr).
# Exit status: 0 when every listed case passes (or the selftests are unavailable: SKIP, or
# --update was given), 1 on regressions.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
update=0
for a in "$@"; do
  case $a in
    --update) update=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "conformance: unknown argument: $a" >&2; exit 2 ;;
  esac
done

shared=${UIOMMU_SHARED:-$root/../shared}
builder=$shared/conformance/build-selftests.sh
list=$root/conformance/passing.txt
out=$root/target/conformance
tests=(iommufd iommufd_fail_nth)

if [ ! -f "$builder" ]; then
  cat <<EOF
conformance: SKIP: the Linux 7.2 iommufd selftests were not found ($builder).
  Expected layout: ../shared/conformance/build-selftests.sh and
  ../shared/conformance/linux-7.2/ beside the repository root (or set UIOMMU_SHARED).
  To get them: install Debian's linux-source-7.2 package (apt-get install linux-source-7.2),
  unpack /usr/src/linux-source-7.2.tar.xz and build tools/testing/selftests/iommu/
  (iommufd.c and iommufd_fail_nth.c, with gcc and libcap-dev; see its Makefile).
EOF
  exit 0
fi

cd "$root"
echo "conformance: cargo build --release"
cargo build --release --quiet
uiommu=$root/target/release/uiommu
[ -x "$uiommu" ] || { echo "conformance: $uiommu was not built" >&2; exit 1; }

# The selftests expect to run as root with every capability ("This requires root"). Where
# we are root but the sandbox's bounding set withholds CAP_SYS_RESOURCE, tell the emulated
# kernel to grant it, as a privileged root would hold it.
grant=()
if [ "$(id -u)" = 0 ]; then
  eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  if [ $(( 0x$eff >> 24 & 1 )) = 0 ]; then
    echo "conformance: root without CAP_SYS_RESOURCE here: granting it to the emulated kernel's view (uiommu run --grant-cap sys_resource)"
    grant=(--grant-cap sys_resource)
  fi
fi

mkdir -p "$out/bin"
echo "conformance: building the selftests"
bash "$builder" "$out/bin" >/dev/null

# Huge pages for the HUGETLB cases (root only; best effort).
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/nr_hugepages ]; then
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
  total=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
  want=160
  if [ "${free:-0}" -lt "$want" ]; then
    { echo $((total + want - free)) > /proc/sys/vm/nr_hugepages; } 2>/dev/null || true
  fi
fi

for t in "${tests[@]}"; do
  echo "conformance: running $t"
  rc=0
  timeout 600 "$uiommu" run "${grant[@]}" -- "$out/bin/$t" >"$out/$t.tap" 2>"$out/$t.stderr" </dev/null || rc=$?
  if [ "$rc" = 124 ]; then
    echo "conformance: $t timed out after 600 s (cases not reported count as failing)"
  fi
done

# One "STATUS NAME" line per reported case; STATUS is pass or fail (SKIP counts as fail).
results=$out/results.txt
for t in "${tests[@]}"; do
  awk '
    /^ok [0-9]+ / { name = $3; st = ($0 ~ /# SKIP/) ? "fail" : "pass"; print st, name; next }
    /^not ok [0-9]+ / { print "fail", $4; next }
  ' "$out/$t.tap"
done | sort -k2 -u >"$results"

planned=0
for t in "${tests[@]}"; do
  n=$(awk '/^1\.\.[0-9]+/ { sub(/^1\.\./, ""); print; exit }' "$out/$t.tap")
  planned=$((planned + ${n:-0}))
done

echo
echo "Per fixture (passed/reported):"
awk '{ split($2, p, "."); f = p[1]; tot[f]++; if ($1 == "pass") ok[f]++ }
     END { for (f in tot) printf "  %-40s %4d/%d\n", f, ok[f], tot[f] }' "$results" | sort
npass=$(awk '$1 == "pass"' "$results" | wc -l)
nrep=$(wc -l <"$results")
echo "Total: $npass passed of $nrep reported ($planned planned)"

passing_now=$out/passing-now.txt
awk '$1 == "pass" { print $2 }' "$results" | sort >"$passing_now"
expected=$out/expected.txt
if [ -f "$list" ]; then
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | awk 'NF' | sort -u >"$expected"
else
  : >"$expected"
fi

regressions=$(comm -23 "$expected" "$passing_now")
new=$(comm -13 "$expected" "$passing_now")

if [ -n "$new" ]; then
  echo
  echo "New passes (not in conformance/passing.txt):"
  echo "$new" | sed 's/^/  /'
fi

if [ "$update" = 1 ]; then
  {
    echo "# Selftest cases (FIXTURE.VARIANT.TEST or FIXTURE.TEST) that must pass under uiommu."
    echo "# scripts/conformance.sh fails if any of them does not; --update rewrites this file."
    cat "$passing_now"
  } >"$list"
  echo
  echo "conformance: updated $list ($npass cases)"
fi

if [ -n "$regressions" ]; then
  echo
  if [ "$update" = 1 ]; then
    echo "Dropped from conformance/passing.txt (no longer passing):"
    echo "$regressions" | sed 's/^/  /'
    exit 0
  fi
  echo "REGRESSIONS (listed in conformance/passing.txt but not passing):"
  echo "$regressions" | sed 's/^/  /'
  echo "conformance: FAIL ($(echo "$regressions" | wc -l) regressions)"
  exit 1
fi
echo "conformance: OK ($(wc -l <"$expected") required cases pass)"
