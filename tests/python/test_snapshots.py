"""Snapshots through the aws CLI v2 and boto3, read back with psql and mysql: seed 000
scenario 3 (re-encrypting a copy under another key), seed 001 end to end (moving an
aws/rds-encrypted MySQL instance to another account), and AWS's snapshot rules."""

import json
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, ACCOUNT_B, REGION, KuraServer
from test_rds import (PASSWORD, SEED_TABLE, cluster_status, error_of, grep_tree, instance_status, psql,
                      rds_config, unit_dir, wait_for)

SEED_20 = (f"User: arn:aws:iam::{ACCOUNT_A}:user/administrator is not authorized to perform: kms:CreateGrant "
           "on this resource because the resource does not exist in this Region, no resource-based policies allow "
           "access, or a resource-based policy explicitly denies access")
SEED_23 = "Restoring db instance from cross account storage encrypted snapshot is not supported."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = KuraServer(tmp_path_factory.mktemp("snapshots") / "data", config=rds_config())
    yield s
    s.stop()


def snapshot_status(rds, snapshot_id, cluster=False):
    if cluster:
        return lambda: rds.describe_db_cluster_snapshots(
            DBClusterSnapshotIdentifier=snapshot_id)["DBClusterSnapshots"][0]["Status"]
    return lambda: rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"][0]["Status"]


def mysql(port, sql, database="app"):
    out = subprocess.run(["mysql", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "admin_user",
                          f"-p{PASSWORD}", "--ssl", "-N", "-B", database, "-e", sql],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def new_aurora_postgresql(rds, cluster_id, **encryption):
    rds.create_db_cluster(DBClusterIdentifier=cluster_id, Engine="aurora-postgresql", MasterUsername="admin_user",
                          MasterUserPassword=PASSWORD, **encryption)
    wait_for(cluster_status(rds, cluster_id), "available")
    add_instance(rds, cluster_id)
    return rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"][0]


def add_instance(rds, cluster_id):
    rds.create_db_instance(DBInstanceIdentifier=f"{cluster_id}-1", DBClusterIdentifier=cluster_id,
                           Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    wait_for(instance_status(rds, f"{cluster_id}-1"), "available")


def test_seed_000_scenario_3_copy_under_another_key_and_restore(server):
    """Snapshot a cluster under CMK-A, copy the snapshot under CMK-B, restore a cluster
    from the copy: its data is complete; disabling CMK-A locks the original only."""
    kms = server.client("kms")
    rds = server.client("rds")
    key_a = kms.create_key(Description="CMK-A")["KeyMetadata"]
    original = new_aurora_postgresql(rds, "seed3", StorageEncrypted=True, KmsKeyId=key_a["Arn"])
    psql(original["Port"], SEED_TABLE + "INSERT INTO users (name, email) VALUES ('David', 'david@example.com');")

    snapshot = rds.create_db_cluster_snapshot(DBClusterSnapshotIdentifier="seed3-snap",
                                              DBClusterIdentifier="seed3")["DBClusterSnapshot"]
    assert snapshot["Status"] == "creating" and snapshot["SnapshotType"] == "manual"
    assert snapshot["StorageEncrypted"] is True and snapshot["KmsKeyId"] == key_a["Arn"]
    wait_for(snapshot_status(rds, "seed3-snap", cluster=True), "available")
    # The cluster kept serving while the snapshot was taken.
    assert "(4 rows)" in psql(original["Port"], "SELECT * FROM users;").stdout

    key_b = kms.create_key(Description="CMK-B")["KeyMetadata"]
    copied = json.loads(server.aws("rds", "copy-db-cluster-snapshot",
                                   "--source-db-cluster-snapshot-identifier", "seed3-snap",
                                   "--target-db-cluster-snapshot-identifier", "seed3-snap-cmk-b",
                                   "--kms-key-id", key_b["Arn"]).stdout)["DBClusterSnapshot"]
    assert copied["Status"] == "creating" and copied["PercentProgress"] == 0
    assert copied["KmsKeyId"] == key_b["Arn"]
    assert copied["SourceDBClusterSnapshotArn"].endswith(":cluster-snapshot:seed3-snap")
    wait_for(snapshot_status(rds, "seed3-snap-cmk-b", cluster=True), "available")
    done = rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier="seed3-snap-cmk-b")["DBClusterSnapshots"][0]
    assert done["PercentProgress"] == 100

    restored = rds.restore_db_cluster_from_snapshot(DBClusterIdentifier="seed3-restored",
                                                    SnapshotIdentifier="seed3-snap-cmk-b",
                                                    Engine="aurora-postgresql")["DBCluster"]
    assert restored["KmsKeyId"] == key_b["Arn"] and restored["StorageEncrypted"] is True
    wait_for(cluster_status(rds, "seed3-restored"), "available")
    add_instance(rds, "seed3-restored")
    port = rds.describe_db_clusters(DBClusterIdentifier="seed3-restored")["DBClusters"][0]["Port"]
    out = psql(port, "SELECT name FROM users ORDER BY id;").stdout
    assert "(4 rows)" in out and "David" in out
    # The restored cluster's files are ciphertext too.
    backing = unit_dir(server, restored["DbClusterResourceId"]) / "storage" / "backing"
    psql(port, "CHECKPOINT;")
    assert grep_tree(backing, b"david@example.com") == []

    # The restored cluster is independent of CMK-A: disabling it locks the original only.
    kms.disable_key(KeyId=key_a["KeyId"])
    wait_for(cluster_status(rds, "seed3"), "inaccessible-encryption-credentials-recoverable", timeout=10)
    time.sleep(2)
    assert cluster_status(rds, "seed3-restored")() == "available"
    assert "(4 rows)" in psql(port, "SELECT * FROM users;").stdout
    kms.enable_key(KeyId=key_a["KeyId"])
    wait_for(cluster_status(rds, "seed3"), "available", timeout=60)


def cross_account_key_policy(with_create_grant):
    """Seed 001 points 18-19: B's key lets A's administrator use it."""
    use = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    statements = [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/administrator"},
         "Action": use + (["kms:CreateGrant"] if with_create_grant else []), "Resource": "*"},
    ]
    if with_create_grant:
        statements.append({
            "Sid": "Allow attachment of persistent resources", "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/administrator"},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def test_seed_001_move_an_aws_rds_encrypted_instance_to_another_account(server):
    rds_a, kms_a = server.client("rds"), server.client("kms")
    rds_b, kms_b = server.client("rds", user="admin_b"), server.client("kms", user="admin_b")
    instance = rds_a.create_db_instance(DBInstanceIdentifier="mysql-a", Engine="mysql", DBInstanceClass="db.t3.micro",
                                        MasterUsername="admin_user", MasterUserPassword=PASSWORD, DBName="app",
                                        AllocatedStorage=20, StorageEncrypted=True)["DBInstance"]
    assert instance["KmsKeyId"] == kms_a.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    wait_for(instance_status(rds_a, "mysql-a"), "available")
    port = rds_a.describe_db_instances(DBInstanceIdentifier="mysql-a")["DBInstances"][0]["Endpoint"]["Port"]
    mysql(port, "CREATE TABLE moved (id INT PRIMARY KEY, note VARCHAR(40)); "
                "INSERT INTO moved VALUES (1, 'from account A'), (2, 'encrypted with aws/rds');")

    rds_a.create_db_snapshot(DBSnapshotIdentifier="mysql-a-snap", DBInstanceIdentifier="mysql-a")
    wait_for(snapshot_status(rds_a, "mysql-a-snap"), "available")
    # Point 16: a snapshot under the AWS managed key cannot be shared.
    with pytest.raises(ClientError) as e:
        rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="mysql-a-snap", AttributeName="restore",
                                           ValuesToAdd=[ACCOUNT_B])
    code, message = error_of(e)
    assert code == "InvalidParameterValue" and "aws/rds" in message

    # Point 18: B's CrossAccountCMK, first without kms:CreateGrant for A: point 20's error.
    key_b = kms_b.create_key(Description="CrossAccountCMK", Policy=cross_account_key_policy(False),
                             BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    kms_b.create_alias(AliasName="alias/CrossAccountCMK", TargetKeyId=key_b["KeyId"])
    failed = server.aws("rds", "copy-db-snapshot", "--source-db-snapshot-identifier",
                        f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:mysql-a-snap",
                        "--target-db-snapshot-identifier", "mysql-a-snap-cmk", "--kms-key-id", key_b["Arn"],
                        check=False)
    assert failed.returncode != 0
    assert "KMSKeyNotAccessibleFault" in failed.stderr and SEED_20 in failed.stderr
    with pytest.raises(ClientError) as e:
        rds_a.describe_db_snapshots(DBSnapshotIdentifier="mysql-a-snap-cmk")
    assert error_of(e)[0] == "DBSnapshotNotFound"  # nothing half-created

    # Points 19-21: with the grant permissions, the copy works and shows its progress.
    kms_b.put_key_policy(KeyId=key_b["KeyId"], PolicyName="default", Policy=cross_account_key_policy(True))
    copied = json.loads(server.aws("rds", "copy-db-snapshot", "--source-db-snapshot-identifier",
                                   f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:mysql-a-snap",
                                   "--target-db-snapshot-identifier", "mysql-a-snap-cmk",
                                   "--kms-key-id", key_b["Arn"]).stdout)["DBSnapshot"]
    assert copied["Status"] == "creating" and copied["PercentProgress"] == 0
    assert copied["Encrypted"] is True and copied["KmsKeyId"] == key_b["Arn"]
    assert copied["SnapshotType"] == "manual" and copied["Engine"] == "mysql"
    assert copied["SourceDBSnapshotIdentifier"] == f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:mysql-a-snap"
    wait_for(snapshot_status(rds_a, "mysql-a-snap-cmk"), "available")

    # Point 22: share the copy with B.
    rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="mysql-a-snap-cmk", AttributeName="restore",
                                       ValuesToAdd=[ACCOUNT_B])
    attributes = rds_a.describe_db_snapshot_attributes(DBSnapshotIdentifier="mysql-a-snap-cmk")
    assert attributes["DBSnapshotAttributesResult"]["DBSnapshotAttributes"] == [
        {"AttributeName": "restore", "AttributeValues": [ACCOUNT_B]}]

    # Point 23: B sees it as shared; restoring it directly fails; B copies it to its own
    # aws/rds key and restores the copy.
    shared_arn = f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:mysql-a-snap-cmk"
    shared = rds_b.describe_db_snapshots(SnapshotType="shared")["DBSnapshots"]
    assert [s["DBSnapshotArn"] for s in shared] == [shared_arn]
    assert rds_b.describe_db_snapshots()["DBSnapshots"] == []
    with pytest.raises(ClientError) as e:
        rds_b.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="mysql-b", DBSnapshotIdentifier=shared_arn)
    assert error_of(e) == ("InvalidParameterValue", SEED_23)
    rds_b.copy_db_snapshot(SourceDBSnapshotIdentifier=shared_arn, TargetDBSnapshotIdentifier="mysql-b-snap",
                           KmsKeyId="alias/aws/rds")
    wait_for(snapshot_status(rds_b, "mysql-b-snap"), "available")
    own = rds_b.describe_db_snapshots(DBSnapshotIdentifier="mysql-b-snap")["DBSnapshots"][0]
    assert own["KmsKeyId"] == kms_b.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    restored = rds_b.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="mysql-b",
                                                          DBSnapshotIdentifier="mysql-b-snap")["DBInstance"]
    assert restored["StorageEncrypted"] is True and restored["KmsKeyId"] == own["KmsKeyId"]
    wait_for(instance_status(rds_b, "mysql-b"), "available")
    port_b = rds_b.describe_db_instances(DBInstanceIdentifier="mysql-b")["DBInstances"][0]["Endpoint"]["Port"]
    assert mysql(port_b, "SELECT id, note FROM moved ORDER BY id;").splitlines() == [
        "1\tfrom account A", "2\tencrypted with aws/rds"]

    # Point 24: clean up the snapshots and the permissions only the move needed.
    rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="mysql-a-snap-cmk", AttributeName="restore",
                                       ValuesToRemove=[ACCOUNT_B])
    assert rds_b.describe_db_snapshots(SnapshotType="shared")["DBSnapshots"] == []
    for name in ("mysql-a-snap", "mysql-a-snap-cmk"):
        assert rds_a.delete_db_snapshot(DBSnapshotIdentifier=name)["DBSnapshot"]["Status"] == "deleted"
    rds_b.delete_db_snapshot(DBSnapshotIdentifier="mysql-b-snap")
    kms_b.put_key_policy(KeyId=key_b["KeyId"], PolicyName="default", Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
                                                "Action": "kms:*", "Resource": "*"}]}))
    # B's restored database does not depend on anything of A's.
    rds_a.delete_db_instance(DBInstanceIdentifier="mysql-a", SkipFinalSnapshot=True)
    assert mysql(port_b, "SELECT COUNT(*) FROM moved;").strip() == "2"


def shared_key_policy():
    """A's key, usable by account B (to restore a cluster from a snapshot A shares)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"},
         "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncrypt*",
                    "kms:GenerateDataKey*"], "Resource": "*"}]})


def test_cluster_snapshots_shared_with_another_account(server):
    """The cluster side of sharing, through the aws CLI: AWS's rule for aws/rds cluster
    snapshots; a CMK-encrypted cluster snapshot shared with B, which
    Aurora lets B restore directly (under B's own key); unsharing; deleting."""
    rds_a, kms_a = server.client("rds"), server.client("kms")
    rds_b, kms_b = server.client("rds", user="admin_b"), server.client("kms", user="admin_b")

    # A cluster snapshot under aws/rds cannot be shared (automated snapshots cannot be
    # either: test_automated_snapshots_are_taken_kept_and_pruned).
    rds_a.create_db_cluster(DBClusterIdentifier="c-awsrds", Engine="aurora-postgresql", MasterUsername="admin_user",
                            MasterUserPassword=PASSWORD, StorageEncrypted=True)
    wait_for(cluster_status(rds_a, "c-awsrds"), "available")
    rds_a.create_db_cluster_snapshot(DBClusterSnapshotIdentifier="c-awsrds-snap", DBClusterIdentifier="c-awsrds")
    wait_for(snapshot_status(rds_a, "c-awsrds-snap", cluster=True), "available")
    refused = server.aws("rds", "modify-db-cluster-snapshot-attribute", "--db-cluster-snapshot-identifier",
                         "c-awsrds-snap", "--attribute-name", "restore", "--values-to-add", ACCOUNT_B, check=False)
    assert refused.returncode != 0 and "InvalidParameterValue" in refused.stderr, refused.stderr

    # A cluster under a customer managed key that B may use.
    key_a = kms_a.create_key(Description="shared with B", Policy=shared_key_policy())["KeyMetadata"]
    original = new_aurora_postgresql(rds_a, "c-shared", StorageEncrypted=True, KmsKeyId=key_a["Arn"])
    psql(original["Port"], SEED_TABLE)
    rds_a.create_db_cluster_snapshot(DBClusterSnapshotIdentifier="c-shared-snap", DBClusterIdentifier="c-shared")
    wait_for(snapshot_status(rds_a, "c-shared-snap", cluster=True), "available")
    server.aws("rds", "modify-db-cluster-snapshot-attribute", "--db-cluster-snapshot-identifier", "c-shared-snap",
               "--attribute-name", "restore", "--values-to-add", ACCOUNT_B)
    attributes = json.loads(server.aws("rds", "describe-db-cluster-snapshot-attributes",
                                       "--db-cluster-snapshot-identifier", "c-shared-snap").stdout)
    assert attributes["DBClusterSnapshotAttributesResult"] == {
        "DBClusterSnapshotIdentifier": "c-shared-snap",
        "DBClusterSnapshotAttributes": [{"AttributeName": "restore", "AttributeValues": [ACCOUNT_B]}]}

    # B sees it as shared (by ARN only) and restores a cluster from it under its own key.
    arn = f"arn:aws:rds:{REGION}:{ACCOUNT_A}:cluster-snapshot:c-shared-snap"
    shared = json.loads(server.aws("rds", "describe-db-cluster-snapshots", "--snapshot-type", "shared",
                                   "--include-shared", user="admin_b").stdout)["DBClusterSnapshots"]
    assert [s["DBClusterSnapshotArn"] for s in shared] == [arn]
    assert rds_b.describe_db_cluster_snapshots()["DBClusterSnapshots"] == []
    own_key = kms_b.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    restored = rds_b.restore_db_cluster_from_snapshot(DBClusterIdentifier="c-from-a", SnapshotIdentifier=arn,
                                                      Engine="aurora-postgresql", KmsKeyId=own_key)["DBCluster"]
    assert restored["StorageEncrypted"] is True and restored["KmsKeyId"] == own_key
    wait_for(cluster_status(rds_b, "c-from-a"), "available")
    rds_b.create_db_instance(DBInstanceIdentifier="c-from-a-1", DBClusterIdentifier="c-from-a",
                             Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    wait_for(instance_status(rds_b, "c-from-a-1"), "available")
    port_b = rds_b.describe_db_clusters(DBClusterIdentifier="c-from-a")["DBClusters"][0]["Port"]
    assert "(3 rows)" in psql(port_b, "SELECT * FROM users;").stdout
    # B's cluster no longer needs A's key.
    kms_a.disable_key(KeyId=key_a["KeyId"])
    wait_for(cluster_status(rds_a, "c-shared"), "inaccessible-encryption-credentials-recoverable", timeout=10)
    assert "(3 rows)" in psql(port_b, "SELECT * FROM users;").stdout
    kms_a.enable_key(KeyId=key_a["KeyId"])

    # Unshared, B no longer sees it; deleted, it is gone.
    server.aws("rds", "modify-db-cluster-snapshot-attribute", "--db-cluster-snapshot-identifier", "c-shared-snap",
               "--attribute-name", "restore", "--values-to-remove", ACCOUNT_B)
    assert rds_b.describe_db_cluster_snapshots(SnapshotType="shared")["DBClusterSnapshots"] == []
    for name in ("c-shared-snap", "c-awsrds-snap"):
        deleted = json.loads(server.aws("rds", "delete-db-cluster-snapshot", "--db-cluster-snapshot-identifier",
                                        name).stdout)["DBClusterSnapshot"]
        assert deleted["Status"] == "deleted"
        with pytest.raises(ClientError) as e:
            rds_a.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=name)
        assert error_of(e)[0] == "DBClusterSnapshotNotFoundFault"
    wait_for(cluster_status(rds_a, "c-shared"), "available", timeout=60)
    rds_b.delete_db_instance(DBInstanceIdentifier="c-from-a-1", SkipFinalSnapshot=True)


def test_unencrypted_snapshot_shared_and_restored_by_another_account(server):
    """Seed 001 point 13, with PostgreSQL: no key involved; B restores A's shared snapshot
    directly; the rules AWS applies to sharing."""
    rds_a = server.client("rds")
    rds_b = server.client("rds", user="admin_b")
    rds_a.create_db_instance(DBInstanceIdentifier="pg-plain", Engine="postgres", DBInstanceClass="db.t3.micro",
                             MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20)
    wait_for(instance_status(rds_a, "pg-plain"), "available")
    port = rds_a.describe_db_instances(DBInstanceIdentifier="pg-plain")["DBInstances"][0]["Endpoint"]["Port"]
    psql(port, SEED_TABLE)
    snapshot = rds_a.create_db_snapshot(DBSnapshotIdentifier="pg-plain-snap", DBInstanceIdentifier="pg-plain",
                                        Tags=[{"Key": "team", "Value": "db"}])["DBSnapshot"]
    assert snapshot["Encrypted"] is False and "KmsKeyId" not in snapshot
    wait_for(snapshot_status(rds_a, "pg-plain-snap"), "available")
    assert "(3 rows)" in psql(port, "SELECT * FROM users;").stdout

    with pytest.raises(ClientError) as e:
        rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="rds:pg-plain-2026-12-02-03-00",
                                           AttributeName="restore", ValuesToAdd=[ACCOUNT_B])
    assert error_of(e)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="pg-plain-snap", AttributeName="restore",
                                           ValuesToAdd=[f"{n:012d}" for n in range(300000000000, 300000000021)])
    assert error_of(e)[0] == "SharedSnapshotQuotaExceeded"
    with pytest.raises(ClientError) as e:
        rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="pg-plain-snap", AttributeName="launch",
                                           ValuesToAdd=[ACCOUNT_B])
    assert error_of(e)[0] == "InvalidParameterValue"
    rds_a.modify_db_snapshot_attribute(DBSnapshotIdentifier="pg-plain-snap", AttributeName="restore",
                                       ValuesToAdd=[ACCOUNT_B])

    arn = f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:pg-plain-snap"
    listed = rds_b.describe_db_snapshots(IncludeShared=True)["DBSnapshots"]
    assert arn in [s["DBSnapshotArn"] for s in listed]
    assert all(s["DBSnapshotArn"] == arn or f":{ACCOUNT_B}:" in s["DBSnapshotArn"] for s in listed)
    with pytest.raises(ClientError) as e:
        rds_b.describe_db_snapshots(DBSnapshotIdentifier="pg-plain-snap")  # shared: by ARN only
    assert error_of(e)[0] == "DBSnapshotNotFound"
    rds_b.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="pg-from-a", DBSnapshotIdentifier=arn)
    wait_for(instance_status(rds_b, "pg-from-a"), "available")
    port_b = rds_b.describe_db_instances(DBInstanceIdentifier="pg-from-a")["DBInstances"][0]["Endpoint"]["Port"]
    assert "(3 rows)" in psql(port_b, "SELECT * FROM users;").stdout
    # Independent: writes to the restored database do not reach the source.
    psql(port_b, "DELETE FROM users;")
    assert "(3 rows)" in psql(port, "SELECT * FROM users;").stdout

    # An unencrypted DB snapshot can be copied into an encrypted one.
    encrypted = rds_a.copy_db_snapshot(SourceDBSnapshotIdentifier="pg-plain-snap",
                                       TargetDBSnapshotIdentifier="pg-plain-encrypted",
                                       KmsKeyId="alias/aws/rds", CopyTags=True)["DBSnapshot"]
    assert encrypted["Encrypted"] is True and encrypted["TagList"] == [{"Key": "team", "Value": "db"}]
    wait_for(snapshot_status(rds_a, "pg-plain-encrypted"), "available")
    restored = rds_a.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="pg-now-encrypted",
                                                          DBSnapshotIdentifier="pg-plain-encrypted")["DBInstance"]
    wait_for(instance_status(rds_a, "pg-now-encrypted"), "available")
    port_e = rds_a.describe_db_instances(DBInstanceIdentifier="pg-now-encrypted")["DBInstances"][0]["Endpoint"]["Port"]
    assert "(3 rows)" in psql(port_e, "SELECT * FROM users;").stdout
    backing = unit_dir(server, restored["DbiResourceId"]) / "storage" / "backing"
    assert backing.is_dir() and grep_tree(backing, b"alice@example.com") == []

    # Deleting a copy in progress cancels it: nothing of it stays in the snapshot store.
    manifests = unit_dir(server, restored["DbiResourceId"]).parent / "snapshots" / "manifests"
    before = sorted(manifests.iterdir())
    rds_a.copy_db_snapshot(SourceDBSnapshotIdentifier="pg-plain-snap", TargetDBSnapshotIdentifier="pg-cancelled",
                           KmsKeyId="alias/aws/rds")
    rds_a.delete_db_snapshot(DBSnapshotIdentifier="pg-cancelled")
    with pytest.raises(ClientError) as e:
        rds_a.describe_db_snapshots(DBSnapshotIdentifier="pg-cancelled")
    assert error_of(e)[0] == "DBSnapshotNotFound"
    wait_for(lambda: sorted(manifests.iterdir()) == before, True, timeout=60)

    with pytest.raises(ClientError) as e:
        rds_a.create_db_snapshot(DBSnapshotIdentifier="pg-plain-snap", DBInstanceIdentifier="pg-plain")
    assert error_of(e)[0] == "DBSnapshotAlreadyExists"
    with pytest.raises(ClientError) as e:
        rds_a.delete_db_snapshot(DBSnapshotIdentifier="no-such-snapshot")
    assert error_of(e)[0] == "DBSnapshotNotFound"
    for instance_id, rds in (("pg-from-a", rds_b), ("pg-now-encrypted", rds_a)):
        rds.delete_db_instance(DBInstanceIdentifier=instance_id, SkipFinalSnapshot=True)

    # A final snapshot on deletion keeps the data; it takes the database's tags when the
    # database says CopyTagsToSnapshot.
    rds_a.modify_db_instance(DBInstanceIdentifier="pg-plain", CopyTagsToSnapshot=True)
    rds_a.add_tags_to_resource(ResourceName=f"arn:aws:rds:{REGION}:{ACCOUNT_A}:db:pg-plain",
                               Tags=[{"Key": "env", "Value": "test"}])
    psql(port, "INSERT INTO users (name, email) VALUES ('Erin', 'erin@example.com');")
    with pytest.raises(ClientError) as e:
        rds_a.delete_db_instance(DBInstanceIdentifier="pg-plain", FinalDBSnapshotIdentifier="pg-plain-snap")
    assert error_of(e)[0] == "DBSnapshotAlreadyExists"
    rds_a.delete_db_instance(DBInstanceIdentifier="pg-plain", FinalDBSnapshotIdentifier="pg-plain-final")
    wait_for(snapshot_status(rds_a, "pg-plain-final"), "available")
    final = rds_a.describe_db_snapshots(DBSnapshotIdentifier="pg-plain-final")["DBSnapshots"][0]
    assert final["TagList"] == [{"Key": "env", "Value": "test"}]
    wait_for(lambda: [i["DBInstanceIdentifier"] for i in rds_a.describe_db_instances()["DBInstances"]].count("pg-plain"), 0)
    rds_a.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="pg-plain", DBSnapshotIdentifier="pg-plain-final")
    wait_for(instance_status(rds_a, "pg-plain"), "available")
    port = rds_a.describe_db_instances(DBInstanceIdentifier="pg-plain")["DBInstances"][0]["Endpoint"]["Port"]
    assert "(4 rows)" in psql(port, "SELECT * FROM users;").stdout
    rds_a.delete_db_instance(DBInstanceIdentifier="pg-plain", SkipFinalSnapshot=True)


def test_automated_snapshots_are_taken_kept_and_pruned(tmp_path):
    """A backup day of 6 seconds: automated snapshots appear once per day when the
    backup window opens, cannot be shared or deleted by hand, become manual when copied,
    expire after the retention period, and go with their database. Backup windows and
    retention periods are checked as AWS does."""
    server = KuraServer(tmp_path / "data", config=rds_config().replace(
        "[rds]\n", "[rds]\nbackup_day_secs = 6\nfirst_port = 26432\n").replace("first_port = 25432\n", ""))
    try:
        rds = server.client("rds")
        create = dict(DBInstanceIdentifier="pg-auto", Engine="postgres", DBInstanceClass="db.t3.micro",
                      MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                      BackupRetentionPeriod=1)
        for window, retention, message in [
                ("05:00-05:30", 1, "The backup window and maintenance window must not overlap."),
                ("03:00-03:20", 1, "The backup window must be at least 30 minutes."),
                ("3am-4am", 1, "Invalid backup window 3am-4am: it must be in the format hh24:mi-hh24:mi, in UTC."),
                ("03:00-03:30", 36, "The backup retention period must be between 0 and 35 days: 36.")]:
            with pytest.raises(ClientError) as e:
                rds.create_db_instance(**{**create, "PreferredBackupWindow": window,
                                          "BackupRetentionPeriod": retention})
            assert error_of(e) == ("InvalidParameterValue", message)
        assert rds.describe_db_instances()["DBInstances"] == []
        # The window opens 12 hours into each (6-second) day: 3 s after each multiple of 6 s.
        created = rds.create_db_instance(**create, PreferredBackupWindow="11:59-12:30")["DBInstance"]
        assert created["PreferredBackupWindow"] == "11:59-12:30"
        assert created["PreferredMaintenanceWindow"] == "sun:05:00-sun:05:30"
        wait_for(instance_status(rds, "pg-auto"), "available")
        modified = rds.modify_db_instance(DBInstanceIdentifier="pg-auto",
                                          PreferredBackupWindow="12:00-12:30")["DBInstance"]
        assert modified["PreferredBackupWindow"] == "12:00-12:30"
        with pytest.raises(ClientError) as e:
            rds.modify_db_instance(DBInstanceIdentifier="pg-auto", PreferredBackupWindow="04:50-05:20")
        assert error_of(e) == ("InvalidParameterValue", "The backup window and maintenance window must not overlap.")

        def automated():
            return [s for s in rds.describe_db_snapshots(DBInstanceIdentifier="pg-auto",
                                                         SnapshotType="automated")["DBSnapshots"]
                    if s["Status"] == "available"]
        wait_for(lambda: len(automated()) > 0, True, timeout=30)
        # The newest: a capture slowed by a busy disk may leave an older one little of
        # its one-day (6 s) life for the checks below.
        first = max(automated(), key=lambda s: s["SnapshotCreateTime"])
        assert first["DBSnapshotIdentifier"].startswith("rds:pg-auto-") and first["SnapshotType"] == "automated"
        assert rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"] == []

        with pytest.raises(ClientError) as e:
            rds.modify_db_snapshot_attribute(DBSnapshotIdentifier=first["DBSnapshotIdentifier"],
                                             AttributeName="restore", ValuesToAdd=[ACCOUNT_B])
        assert error_of(e)[0] == "InvalidParameterValue"
        with pytest.raises(ClientError) as e:
            rds.delete_db_snapshot(DBSnapshotIdentifier=first["DBSnapshotIdentifier"])
        assert error_of(e)[0] == "InvalidDBSnapshotState"
        copy = rds.copy_db_snapshot(SourceDBSnapshotIdentifier=first["DBSnapshotIdentifier"],
                                    TargetDBSnapshotIdentifier="pg-auto-copy")["DBSnapshot"]
        assert copy["SnapshotType"] == "manual"
        wait_for(snapshot_status(rds, "pg-auto-copy"), "available")
        rds.modify_db_snapshot_attribute(DBSnapshotIdentifier="pg-auto-copy", AttributeName="restore",
                                         ValuesToAdd=[ACCOUNT_B])

        # One retention day later the first automated snapshot is gone, newer ones remain.
        wait_for(lambda: first["DBSnapshotIdentifier"] not in [s["DBSnapshotIdentifier"] for s in automated()],
                 True, timeout=30)
        wait_for(lambda: len(automated()) >= 1, True, timeout=30)
        assert len(automated()) <= 2
        # Every automated snapshot after the first was started as the window opened.
        for later in automated():
            into_day = later["SnapshotCreateTime"].timestamp() % 6
            assert 3.0 <= into_day < 3.8, (later["DBSnapshotIdentifier"], into_day)
        rds.delete_db_instance(DBInstanceIdentifier="pg-auto", SkipFinalSnapshot=True)
        wait_for(lambda: len(rds.describe_db_snapshots(SnapshotType="automated")["DBSnapshots"]), 0, timeout=30)
        assert [s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]] == ["pg-auto-copy"]
    finally:
        server.stop()


def test_a_copy_interrupted_by_kill_9_resumes_after_restart(tmp_path):
    """kill -9 while copies under another key are re-encrypting, one in the same account and
    one by another account from a shared snapshot: after the restart both finish by
    themselves (never half-visible), the grant the second one held on the other account's
    key is retired, and a database restored from a copy has every row."""
    server = KuraServer(tmp_path / "data", config=rds_config().replace("first_port = 25432", "first_port = 28432"))
    try:
        rds, kms = server.client("rds"), server.client("kms")
        # Account B may use key_a to copy A's shared snapshot (seed 001's key policy shape).
        key_a = kms.create_key(Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_A}:root"}, "Action": "kms:*",
             "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_B}:user/administrator"},
             "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"], "Resource": "*"}]}),
            BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["Arn"]
        key_b = kms.create_key()["KeyMetadata"]["Arn"]
        rds.create_db_instance(DBInstanceIdentifier="pg-kill", Engine="postgres", DBInstanceClass="db.t3.micro",
                               MasterUsername="admin_user", MasterUserPassword=PASSWORD, AllocatedStorage=20,
                               StorageEncrypted=True, KmsKeyId=key_a, BackupRetentionPeriod=0)
        wait_for(instance_status(rds, "pg-kill"), "available")
        port = rds.describe_db_instances(DBInstanceIdentifier="pg-kill")["DBInstances"][0]["Endpoint"]["Port"]
        psql(port, SEED_TABLE)
        # Enough data (~100 MB) that copying it takes a few seconds, so the kill lands mid-copy.
        psql(port, "CREATE TABLE filler AS SELECT repeat(md5(i::text), 30) AS pad FROM generate_series(1, 100000) i;")
        rds.create_db_snapshot(DBSnapshotIdentifier="pg-kill-snap", DBInstanceIdentifier="pg-kill")
        wait_for(snapshot_status(rds, "pg-kill-snap"), "available")
        rds.modify_db_snapshot_attribute(DBSnapshotIdentifier="pg-kill-snap", AttributeName="restore",
                                         ValuesToAdd=[ACCOUNT_B])
        rds_b, kms_b = server.client("rds", user="admin_b"), server.client("kms", user="admin_b")
        key_of_b = kms_b.create_key()["KeyMetadata"]["Arn"]
        shared_arn = f"arn:aws:rds:{REGION}:{ACCOUNT_A}:snapshot:pg-kill-snap"

        def held():
            return [g for g in kms.list_grants(KeyId=key_a)["Grants"]
                    if g["GranteePrincipal"].startswith(f"arn:aws:iam::{ACCOUNT_B}:")]
        # A copy deleted while it runs gives back at once the grant it held.
        rds_b.copy_db_snapshot(SourceDBSnapshotIdentifier=shared_arn, TargetDBSnapshotIdentifier="pg-kill-cancelled",
                               KmsKeyId=key_of_b)
        assert len(held()) == 1, held()
        rds_b.delete_db_snapshot(DBSnapshotIdentifier="pg-kill-cancelled")
        assert held() == []

        copy = rds.copy_db_snapshot(SourceDBSnapshotIdentifier="pg-kill-snap", TargetDBSnapshotIdentifier="pg-kill-b",
                                    KmsKeyId=key_b)["DBSnapshot"]
        assert copy["Status"] == "creating"
        foreign = rds_b.copy_db_snapshot(SourceDBSnapshotIdentifier=shared_arn, TargetDBSnapshotIdentifier="pg-kill-in-b",
                                         KmsKeyId=key_of_b)["DBSnapshot"]
        assert foreign["Status"] == "creating"
        assert len(held()) == 1, held()
        server.kill9()
        server.start()
        rds, kms = server.client("rds"), server.client("kms")
        history = wait_for(snapshot_status(rds, "pg-kill-b"), "available", timeout=180)
        assert "failed" not in history
        rds_b = server.client("rds", user="admin_b")
        history = wait_for(snapshot_status(rds_b, "pg-kill-in-b"), "available", timeout=180)
        assert "failed" not in history
        assert held() == []
        log = (tmp_path / "data.log").read_text()
        assert "resuming an interrupted snapshot snapshot=pg-kill-b" in log
        assert "resuming an interrupted snapshot snapshot=pg-kill-in-b" in log
        rds.restore_db_instance_from_db_snapshot(DBInstanceIdentifier="pg-kill-restored",
                                                 DBSnapshotIdentifier="pg-kill-b")
        wait_for(instance_status(rds, "pg-kill-restored"), "available")
        restored = rds.describe_db_instances(DBInstanceIdentifier="pg-kill-restored")["DBInstances"][0]
        assert restored["KmsKeyId"] == key_b
        assert "(3 rows)" in psql(restored["Endpoint"]["Port"], "SELECT * FROM users;").stdout
    finally:
        server.stop()
