#!/usr/bin/env bash
# The two field reports (../shared/SEEDS.md), replayed end to end against a fresh kura with
# the aws CLI, psql and mysql. docs/walkthrough.md explains each step and shows the output.
#
#   scripts/walkthrough.sh [KURA_BIN]     (default: target/debug/kura, else target/release/kura)
#
# It starts its own server on a free port with two accounts (A = 111111111111,
# B = 222222222222) and a throw-away data directory, and exits non-zero at the first step
# whose result is not what the report describes.
set -euo pipefail
cd "$(dirname "$0")/.."

KURA_BIN="${1:-${KURA_BIN:-}}"
if [ -z "$KURA_BIN" ]; then
  for candidate in target/debug/kura target/release/kura; do
    [ -x "$candidate" ] && KURA_BIN="$candidate" && break
  done
fi
[ -x "${KURA_BIN:-}" ] || { echo "build kura first (cargo build -p kura)" >&2; exit 2; }

A=111111111111
B=222222222222
REGION=ap-northeast-1
PASSWORD='Passw0rd-walk'
WORK="$(mktemp -d /tmp/kura-walkthrough.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ENDPOINT="http://127.0.0.1:$PORT"
cat > "$WORK/kura.toml" <<EOF
region = "$REGION"
[rds]
first_port = 27432
key_check_interval_secs = 1
[[accounts]]
id = "$A"
  [[accounts.users]]
  name = "administrator"
  access_key_id = "AKIAWALKTHROUGHAAAAA"
  secret_access_key = "walkthrough-secret-a-0000000000000000000"
  policies = ["arn:aws:iam::aws:policy/AdministratorAccess"]
[[accounts]]
id = "$B"
  [[accounts.users]]
  name = "administrator"
  access_key_id = "AKIAWALKTHROUGHBBBBB"
  secret_access_key = "walkthrough-secret-b-0000000000000000000"
  policies = ["arn:aws:iam::aws:policy/AdministratorAccess"]
EOF
cat > "$WORK/credentials" <<EOF
[account-a]
aws_access_key_id = AKIAWALKTHROUGHAAAAA
aws_secret_access_key = walkthrough-secret-a-0000000000000000000
[account-b]
aws_access_key_id = AKIAWALKTHROUGHBBBBB
aws_secret_access_key = walkthrough-secret-b-0000000000000000000
EOF

"$KURA_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --config "$WORK/kura.toml" \
  > "$WORK/kura.out" 2> "$WORK/kura.log" &
KURA_PID=$!
cleanup() {
  kill "$KURA_PID" 2>/dev/null || true
  wait "$KURA_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "$ENDPOINT/_kura/health" 2>/dev/null && break
  sleep 0.1
done

export AWS_SHARED_CREDENTIALS_FILE="$WORK/credentials" AWS_CONFIG_FILE=/dev/null AWS_DEFAULT_REGION="$REGION"
export AWS_PAGER="" AWS_MAX_ATTEMPTS=1
aws_a() { aws --endpoint-url "$ENDPOINT" --profile account-a --output text "$@"; }
aws_b() { aws --endpoint-url "$ENDPOINT" --profile account-b --output text "$@"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; echo "--- server log (tail) ---" >&2; tail -20 "$WORK/kura.log" >&2; exit 1; }
expect() { # expect WHAT EXPECTED ACTUAL
  [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
  echo "   $1: $3"
}
# wait_until WHAT EXPECTED COMMAND...: polls COMMAND (every 0.5 s, up to 3 minutes).
wait_until() {
  local what="$1" wanted="$2" got=""
  shift 2
  for _ in $(seq 360); do
    got="$("$@" 2>/dev/null || true)"
    [ "$got" = "$wanted" ] && { echo "   $what: $got"; return 0; }
    sleep 0.5
  done
  fail "$what never became '$wanted' (last: '$got')"
}
cluster_status() { "$1" rds describe-db-clusters --db-cluster-identifier "$2" --query 'DBClusters[0].Status'; }
instance_status() { "$1" rds describe-db-instances --db-instance-identifier "$2" --query 'DBInstances[0].DBInstanceStatus'; }
snapshot_status() { "$1" rds describe-db-snapshots --db-snapshot-identifier "$2" --query 'DBSnapshots[0].Status'; }
cluster_snapshot_status() {
  "$1" rds describe-db-cluster-snapshots --db-cluster-snapshot-identifier "$2" --query 'DBClusterSnapshots[0].Status'
}
psql_at() { PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=3 psql "host=127.0.0.1 port=$1 user=postgres_admin dbname=postgres sslmode=require" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"; }
mysql_at() { mysql --no-defaults -h 127.0.0.1 -P "$1" -u admin_user "-p$PASSWORD" --ssl -N -B app -e "$2"; }

# ---------------------------------------------------------------------------------------
step "Seed 000, scenario 2: an Aurora PostgreSQL cluster under CMK-A"
KEY_A=$(aws_a kms create-key --description CMK-A --query KeyMetadata.KeyId)
aws_a rds create-db-cluster --db-cluster-identifier aurora-cluster-demo --engine aurora-postgresql \
  --master-username postgres_admin --master-user-password "$PASSWORD" \
  --storage-encrypted --kms-key-id "$KEY_A" --query 'DBCluster.[Status,StorageEncrypted]'
wait_until "cluster" available cluster_status aws_a aurora-cluster-demo
aws_a rds create-db-instance --db-instance-identifier aurora-instance-demo \
  --db-cluster-identifier aurora-cluster-demo --engine aurora-postgresql \
  --db-instance-class db.r6g.large --query 'DBInstance.DBInstanceStatus'
wait_until "instance" available instance_status aws_a aurora-instance-demo
PORT_A=$(aws_a rds describe-db-clusters --db-cluster-identifier aurora-cluster-demo --query 'DBClusters[0].Port')
psql_at "$PORT_A" "CREATE TABLE users (id SERIAL PRIMARY KEY, name VARCHAR(100), email VARCHAR(100),
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
  INSERT INTO users (name, email) VALUES ('Alice', 'alice@example.com'), ('Bob', 'bob@example.com'),
  ('Charlie', 'charlie@example.com');"
expect "rows" 3 "$(psql_at "$PORT_A" 'SELECT count(*) FROM users')"

step "Disable CMK-A: the cluster locks within seconds, connections are refused"
aws_a kms disable-key --key-id "$KEY_A"
wait_until "cluster" inaccessible-encryption-credentials-recoverable cluster_status aws_a aurora-cluster-demo
if psql_at "$PORT_A" 'SELECT 1' >/dev/null 2>&1; then fail "a locked cluster answered"; fi
echo "   psql: connection refused"

step "Enable CMK-A: the cluster comes back by itself, every row intact"
aws_a kms enable-key --key-id "$KEY_A"
wait_until "cluster" available cluster_status aws_a aurora-cluster-demo
psql_at "$PORT_A" "INSERT INTO users (name, email) VALUES ('David', 'david@example.com');"
expect "rows" 4 "$(psql_at "$PORT_A" 'SELECT count(*) FROM users')"

# ---------------------------------------------------------------------------------------
step "Seed 000, scenario 3: snapshot under CMK-A, copy under CMK-B, restore"
aws_a rds create-db-cluster-snapshot --db-cluster-snapshot-identifier demo-snap \
  --db-cluster-identifier aurora-cluster-demo --query 'DBClusterSnapshot.Status'
wait_until "snapshot" available cluster_snapshot_status aws_a demo-snap
KEY_B=$(aws_a kms create-key --description CMK-B --query KeyMetadata.Arn)
aws_a rds copy-db-cluster-snapshot --source-db-cluster-snapshot-identifier demo-snap \
  --target-db-cluster-snapshot-identifier demo-snap-cmk-b --kms-key-id "$KEY_B" \
  --query 'DBClusterSnapshot.[Status,PercentProgress]'
wait_until "copy" available cluster_snapshot_status aws_a demo-snap-cmk-b
expect "copy key" "$KEY_B" "$(aws_a rds describe-db-cluster-snapshots \
  --db-cluster-snapshot-identifier demo-snap-cmk-b --query 'DBClusterSnapshots[0].KmsKeyId')"
aws_a rds restore-db-cluster-from-snapshot --db-cluster-identifier restored-cluster \
  --snapshot-identifier demo-snap-cmk-b --engine aurora-postgresql --query 'DBCluster.Status'
wait_until "restored cluster" available cluster_status aws_a restored-cluster
aws_a rds create-db-instance --db-instance-identifier restored-instance \
  --db-cluster-identifier restored-cluster --engine aurora-postgresql \
  --db-instance-class db.r6g.large --query 'DBInstance.DBInstanceStatus'
wait_until "restored instance" available instance_status aws_a restored-instance
PORT_R=$(aws_a rds describe-db-clusters --db-cluster-identifier restored-cluster --query 'DBClusters[0].Port')
expect "restored rows" 4 "$(psql_at "$PORT_R" 'SELECT count(*) FROM users')"

step "Disable CMK-A again: the original locks, the restored cluster (CMK-B) keeps serving"
aws_a kms disable-key --key-id "$KEY_A"
wait_until "original" inaccessible-encryption-credentials-recoverable cluster_status aws_a aurora-cluster-demo
expect "restored cluster" available "$(cluster_status aws_a restored-cluster)"
expect "restored rows" 4 "$(psql_at "$PORT_R" 'SELECT count(*) FROM users')"
aws_a kms enable-key --key-id "$KEY_A"

# ---------------------------------------------------------------------------------------
step "Seed 001: a MySQL instance in A encrypted with aws/rds"
aws_a rds create-db-instance --db-instance-identifier mysql-a --engine mysql \
  --db-instance-class db.t3.micro --master-username admin_user --master-user-password "$PASSWORD" \
  --db-name app --allocated-storage 20 --storage-encrypted --query 'DBInstance.KmsKeyId'
wait_until "instance" available instance_status aws_a mysql-a
PORT_M=$(aws_a rds describe-db-instances --db-instance-identifier mysql-a --query 'DBInstances[0].Endpoint.Port')
mysql_at "$PORT_M" "CREATE TABLE moved (id INT PRIMARY KEY, note VARCHAR(40));
  INSERT INTO moved VALUES (1, 'from account A'), (2, 'encrypted with aws/rds');"
aws_a rds create-db-snapshot --db-snapshot-identifier mysql-a-snap --db-instance-identifier mysql-a \
  --query 'DBSnapshot.Status'
wait_until "snapshot" available snapshot_status aws_a mysql-a-snap

step "Point 16: a snapshot under aws/rds cannot be shared"
if aws_a rds modify-db-snapshot-attribute --db-snapshot-identifier mysql-a-snap \
     --attribute-name restore --values-to-add "$B" 2> "$WORK/err"; then fail "shared an aws/rds snapshot"; fi
grep -q InvalidParameterValue "$WORK/err" || fail "unexpected error: $(cat "$WORK/err")"
echo "   $(head -c 160 "$WORK/err")..."

step "Point 18: CrossAccountCMK in B, its policy letting A's administrator use it"
cat > "$WORK/key-policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::$B:root"},
   "Action": "kms:*", "Resource": "*"},
  {"Sid": "Allow use of the key", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::$A:user/administrator"},
   "Action": ["kms:CreateGrant", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
              "kms:DescribeKey"], "Resource": "*"},
  {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
   "Principal": {"AWS": "arn:aws:iam::$A:user/administrator"},
   "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
   "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]}
EOF
CMK_B=$(aws_b kms create-key --description CrossAccountCMK --policy "file://$WORK/key-policy.json" \
  --query KeyMetadata.Arn)
aws_b kms create-alias --alias-name alias/CrossAccountCMK --target-key-id "$CMK_B"

step "Point 21: in A, copy the snapshot under B's key"
aws_a rds copy-db-snapshot \
  --source-db-snapshot-identifier "arn:aws:rds:$REGION:$A:snapshot:mysql-a-snap" \
  --target-db-snapshot-identifier mysql-a-snap-cmk --kms-key-id "$CMK_B" \
  --query 'DBSnapshot.[Status,PercentProgress,Encrypted,SnapshotType]'
wait_until "copy" available snapshot_status aws_a mysql-a-snap-cmk

step "Point 22: share the copy with B"
aws_a rds modify-db-snapshot-attribute --db-snapshot-identifier mysql-a-snap-cmk \
  --attribute-name restore --values-to-add "$B" \
  --query 'DBSnapshotAttributesResult.DBSnapshotAttributes[0].AttributeValues'

step "Point 23: B sees it as shared; restoring it directly fails; B copies, then restores"
SHARED="arn:aws:rds:$REGION:$A:snapshot:mysql-a-snap-cmk"
expect "shared with B" "$SHARED" "$(aws_b rds describe-db-snapshots --snapshot-type shared \
  --query 'DBSnapshots[0].DBSnapshotArn')"
if aws_b rds restore-db-instance-from-db-snapshot --db-instance-identifier mysql-b \
     --db-snapshot-identifier "$SHARED" 2> "$WORK/err"; then fail "restored a shared encrypted snapshot"; fi
grep -q "Restoring db instance from cross account storage encrypted snapshot is not supported." "$WORK/err" \
  || fail "unexpected error: $(cat "$WORK/err")"
echo "   $(cat "$WORK/err")"
aws_b rds copy-db-snapshot --source-db-snapshot-identifier "$SHARED" \
  --target-db-snapshot-identifier mysql-b-snap --kms-key-id alias/aws/rds --query 'DBSnapshot.Status'
wait_until "B's copy" available snapshot_status aws_b mysql-b-snap
aws_b rds restore-db-instance-from-db-snapshot --db-instance-identifier mysql-b \
  --db-snapshot-identifier mysql-b-snap --query 'DBInstance.DBInstanceStatus'
wait_until "B's instance" available instance_status aws_b mysql-b
PORT_MB=$(aws_b rds describe-db-instances --db-instance-identifier mysql-b --query 'DBInstances[0].Endpoint.Port')
expect "rows in B" "1	from account A
2	encrypted with aws/rds" "$(mysql_at "$PORT_MB" 'SELECT id, note FROM moved ORDER BY id')"

step "Point 24: clean up what only the move needed"
aws_a rds modify-db-snapshot-attribute --db-snapshot-identifier mysql-a-snap-cmk \
  --attribute-name restore --values-to-remove "$B" >/dev/null
for snapshot in mysql-a-snap mysql-a-snap-cmk; do
  aws_a rds delete-db-snapshot --db-snapshot-identifier "$snapshot" --query 'DBSnapshot.Status'
done
aws_b rds delete-db-snapshot --db-snapshot-identifier mysql-b-snap --query 'DBSnapshot.Status'
aws_b kms put-key-policy --key-id "$CMK_B" --policy-name default --policy \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::$B:root\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}"
expect "rows in B after clean-up" 2 "$(mysql_at "$PORT_MB" 'SELECT count(*) FROM moved')"

printf '\nwalkthrough complete: both field reports reproduced\n'
