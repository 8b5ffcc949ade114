#!/usr/bin/env bash
# Validates deploy/ without a cluster; exits non-zero on any problem. Run from anywhere:
#
#   bash deploy/validate.sh
#
# What is checked, and with what:
#   1. kubectl kustomize deploy/       renders the kustomization as `kubectl apply -k` would:
#      YAML syntax, files listed but missing, unknown kustomization fields, two objects with the
#      same kind and name. Works offline with any kubectl (Debian's 1.20 embeds kustomize 2.0.3,
#      recent ones kustomize 5).
#   2. every *.yaml here is listed in kustomization.yaml, and the render has exactly the
#      expected objects (kubectl label --local decodes every document offline: each needs an
#      apiVersion, a kind and a name).
#   3. a schema check of every rendered object, strict (unknown fields are errors), against
#      Kubernetes 1.25 and 1.33, with kubernetes-validate (PyPI; bundles the API schemas) when it
#      is installed. Skipped with a notice when it is not, unless DEPLOY_REQUIRE_SCHEMA=1
#      (.ci/run sets it and installs the tool).
#   4. the policy in configmap.yaml passes `forecourt check` (problems are reported at their
#      line in deploy/configmap.yaml).
# What is not checked: anything only an API server knows. kubectl's own `apply/create
# --dry-run=client` needs the server's discovery (even with --validate=false) and its schema
# validation the server's OpenAPI, so neither runs offline with either kubectl version; nor are
# admission policies, quotas, whether the namespace, image or Secret exist, or whether the RBAC
# matches what Forecourt calls (tests/test_deploy.rs pins the rules; `kubectl auth can-i --as
# system:serviceaccount:shop:forecourt ...` checks them in a cluster).
#
# Environment:
#   KUBECTL=path            the kubectl to use (default: kubectl on PATH)
#   FORECOURT_BIN=path      the forecourt binary (default: built with cargo, a no-op when fresh)
#   KUBERNETES_VALIDATE=cmd the schema validator (default: python3 -m kubernetes_validate)
#   DEPLOY_SCHEMA_VERSIONS  Kubernetes versions to validate against (default "1.25.0 1.33.0")
#   DEPLOY_REQUIRE_SCHEMA=1 fail instead of skipping step 3 when the validator is missing
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
kubectl="${KUBECTL:-kubectl}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

command -v "$kubectl" >/dev/null || {
  echo "FAIL: $kubectl not found (Debian: apt-get install kubernetes-client)" >&2
  exit 1
}
# Nothing here talks to a cluster; an empty kubeconfig makes sure of it.
export KUBECONFIG="$work/kubeconfig"
: >"$KUBECONFIG"
echo "kubectl: $("$kubectl" version --client 2>/dev/null | head -n1)"

# 1. Render.
if "$kubectl" kustomize "$here" >"$work/rendered.yaml" 2>"$work/err"; then
  echo "ok: kubectl kustomize deploy/ ($(grep -c '^kind:' "$work/rendered.yaml") objects)"
else
  cat "$work/err" >&2
  fail "kubectl kustomize deploy/"
  exit 1 # nothing below makes sense without a render
fi

# 2. Every manifest is in the kustomization, and the render has exactly these objects.
for file in "$here"/*.yaml; do
  name="$(basename "$file")"
  [ "$name" = kustomization.yaml ] && continue
  grep -Eq "^[[:space:]]*-[[:space:]]*${name//./\\.}[[:space:]]*(#.*)?\$" "$here/kustomization.yaml" ||
    fail "deploy/$name is not listed in deploy/kustomization.yaml resources"
done
expected="configmap/forecourt-policy
deployment.apps/forecourt
poddisruptionbudget.policy/forecourt
role.rbac.authorization.k8s.io/forecourt
rolebinding.rbac.authorization.k8s.io/forecourt
service/forecourt
service/forecourt-admin
serviceaccount/forecourt"
if "$kubectl" label --local -f "$work/rendered.yaml" -o name validated=true \
  >"$work/objects" 2>"$work/err"; then
  if [ "$(sort "$work/objects")" = "$expected" ]; then
    echo "ok: the expected $(wc -l <"$work/objects") objects, all decodable"
  else
    fail "rendered objects differ from the expected set:"
    diff <(echo "$expected") <(sort "$work/objects") >&2 || true
  fi
else
  grep -v 'loader.go' "$work/err" >&2 || true
  fail "kubectl could not decode the rendered objects"
fi

# 3. Schemas.
if [ -n "${KUBERNETES_VALIDATE:-}" ]; then
  read -r -a validate <<<"$KUBERNETES_VALIDATE"
elif command -v python3 >/dev/null && python3 -c 'import kubernetes_validate' 2>/dev/null; then
  validate=(python3 -m kubernetes_validate)
else
  validate=()
fi
if ((${#validate[@]})); then
  for version in ${DEPLOY_SCHEMA_VERSIONS:-1.25.0 1.33.0}; do
    if "${validate[@]}" --strict --quiet -k "$version" "$work/rendered.yaml"; then
      echo "ok: strict schema validation against Kubernetes $version"
    else
      fail "schema validation against Kubernetes $version"
    fi
  done
elif [ "${DEPLOY_REQUIRE_SCHEMA:-0}" = 1 ]; then
  fail "kubernetes-validate not found (python3 -m pip install kubernetes-validate)"
else
  echo "skipped: schema validation (python3 -m pip install kubernetes-validate to enable)"
fi

# 4. The policy.
if [ -n "${FORECOURT_BIN:-}" ]; then
  forecourt="$FORECOURT_BIN"
else
  (cd "$root" && cargo build -q -j1 -p forecourt-proxy --bin forecourt)
  forecourt="${CARGO_TARGET_DIR:-$root/target}/debug/forecourt"
fi
"$kubectl" label --local -f "$here/configmap.yaml" -o 'jsonpath={.data.policy\.yaml}' \
  validated=true >"$work/policy.yaml" 2>"$work/err" || {
  grep -v 'loader.go' "$work/err" >&2 || true
  fail "no data.policy.yaml in deploy/configmap.yaml"
}
# The policy is a literal block ("policy.yaml: |", indented 4): line n of it is line
# header+n of configmap.yaml, column c is column c+4. Problems are reported there.
header="$(grep -n '^  policy.yaml: |$' "$here/configmap.yaml" | cut -d: -f1 || true)"
if "$forecourt" check -c "$work/policy.yaml" >"$work/check" 2>&1; then
  echo "ok: forecourt check on the policy in configmap.yaml"
else
  if [ -n "$header" ]; then
    awk -v f="$work/policy.yaml" -v h="$header" '
      index($0, f ":") == 1 {
        rest = substr($0, length(f) + 2); split(rest, p, ":")
        sub(/^[0-9]+:[0-9]+:/, "", rest)
        printf "deploy/configmap.yaml:%d:%d:%s\n", p[1] + h, p[2] + 4, rest; next
      }
      { print }' "$work/check" >&2
  else
    cat "$work/check" >&2
  fi
  fail "forecourt check on the policy in deploy/configmap.yaml"
fi

if ((failed)); then
  echo "deploy/ validation failed" >&2
  exit 1
fi
echo "deploy/ is valid"
