"""Envelope encryption through boto3: contexts, tampering, key states, rotation."""

import base64

import pytest
from botocore.exceptions import ClientError

from kura_harness import ACCOUNT_A, REGION


def error_of(excinfo):
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["Error"]["Message"]


CONTEXT = {"aws:rds:db-id": "db-ABCDEFGHIJ", "purpose": "test"}


def test_encrypt_decrypt_round_trip_with_every_key_reference(kms, new_key):
    meta = new_key()
    kms.create_alias(AliasName="alias/crypto-ref", TargetKeyId=meta["KeyId"])
    for ref in (meta["KeyId"], meta["Arn"], "alias/crypto-ref", f"arn:aws:kms:{REGION}:{ACCOUNT_A}:alias/crypto-ref"):
        encrypted = kms.encrypt(KeyId=ref, Plaintext=b"hello kura", EncryptionContext=CONTEXT)
        assert encrypted["KeyId"] == meta["Arn"]
        assert encrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext=CONTEXT)
        assert decrypted["Plaintext"] == b"hello kura"
        assert decrypted["KeyId"] == meta["Arn"]
        assert decrypted["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        # Naming the key on Decrypt is optional, but must be right when given.
        assert kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext=CONTEXT,
                           KeyId=ref)["Plaintext"] == b"hello kura"


def test_ciphertexts_are_randomized_and_bounded(kms, new_key):
    key_id = new_key()["KeyId"]
    a = kms.encrypt(KeyId=key_id, Plaintext=b"same")["CiphertextBlob"]
    b = kms.encrypt(KeyId=key_id, Plaintext=b"same")["CiphertextBlob"]
    assert a != b
    big = kms.encrypt(KeyId=key_id, Plaintext=b"x" * 4096)["CiphertextBlob"]
    assert len(big) <= 6144
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x" * 4097)
    assert error_of(e) == ("ValidationException",
                           "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
                           "Member must have length less than or equal to 4096")


def test_encryption_context_must_match_exactly(kms, new_key):
    key_id = new_key()["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"bound", EncryptionContext=CONTEXT)["CiphertextBlob"]
    wrong_contexts = [
        {},
        {"aws:rds:db-id": "db-ABCDEFGHIJ"},
        {**CONTEXT, "extra": "pair"},
        {**CONTEXT, "purpose": "TEST"},
        {"AWS:RDS:DB-ID": "db-ABCDEFGHIJ", "purpose": "test"},
    ]
    for context in wrong_contexts:
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
        assert error_of(e) == ("InvalidCiphertextException", "")
    # Order of pairs never matters.
    reordered = dict(reversed(list(CONTEXT.items())))
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"bound"


def test_tampered_ciphertexts_fail(kms, new_key):
    key_id = new_key()["KeyId"]
    blob = bytearray(kms.encrypt(KeyId=key_id, Plaintext=b"integrity")["CiphertextBlob"])
    for position in range(0, len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=bytes(tampered))
        # Flipping a bit of the key id makes the blob name another (unknown) key.
        assert error_of(e)[0] in ("InvalidCiphertextException", "AccessDeniedException"), position
    for garbage in (b"\x00", b"not a kms ciphertext at all", bytes(blob[:-1])):
        with pytest.raises(ClientError) as e:
            kms.decrypt(CiphertextBlob=garbage)
        assert error_of(e)[0] == "InvalidCiphertextException"


def test_decrypt_with_the_wrong_key_id(kms, new_key):
    right, wrong = new_key()["KeyId"], new_key()["KeyId"]
    blob = kms.encrypt(KeyId=right, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob, KeyId=wrong)
    assert error_of(e) == ("IncorrectKeyException",
                           "The key ID in the request does not identify a CMK that can perform this operation.")


def test_generate_data_key_forms(kms, new_key):
    key_id = new_key()["KeyId"]
    for kwargs, size in (({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16), ({"NumberOfBytes": 64}, 64)):
        data_key = kms.generate_data_key(KeyId=key_id, EncryptionContext=CONTEXT, **kwargs)
        assert len(data_key["Plaintext"]) == size
        assert len(data_key["KeyMaterialId"]) == 64
        unwrapped = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=CONTEXT)
        assert unwrapped["Plaintext"] == data_key["Plaintext"]
    without = kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    assert "Plaintext" not in without
    assert len(kms.decrypt(CiphertextBlob=without["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]) == 32
    for bad in ({}, {"KeySpec": "AES_256", "NumberOfBytes": 32}):
        with pytest.raises(ClientError) as e:
            kms.generate_data_key(KeyId=key_id, **bad)
        assert error_of(e)[0] == "ValidationException"
    with pytest.raises(ClientError) as e:
        kms.generate_data_key(KeyId=key_id, NumberOfBytes=1025)
    assert error_of(e) == ("ValidationException",
                           "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy "
                           "constraint: Member must have value less than or equal to 1024")


def test_re_encrypt_moves_ciphertext_to_another_key(kms, new_key):
    source, destination = new_key(), new_key()
    blob = kms.encrypt(KeyId=source["KeyId"], Plaintext=b"moving", EncryptionContext=CONTEXT)["CiphertextBlob"]
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=CONTEXT,
                           DestinationKeyId=destination["KeyId"], DestinationEncryptionContext={"new": "ctx"})
    assert moved["SourceKeyId"] == source["Arn"]
    assert moved["KeyId"] == destination["Arn"]
    assert kms.decrypt(CiphertextBlob=moved["CiphertextBlob"], EncryptionContext={"new": "ctx"})["Plaintext"] == b"moving"
    with pytest.raises(ClientError) as e:
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=destination["KeyId"])
    assert error_of(e)[0] == "InvalidCiphertextException"


def test_generate_random(kms):
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert len(a) == 32 and a != b
    for bad in (0, 1025):
        with pytest.raises(ClientError) as e:
            kms.generate_random(NumberOfBytes=bad)
        assert error_of(e)[0] == "ValidationException"


def test_key_states_gate_cryptography(kms, new_key):
    meta = new_key()
    key_id, arn = meta["KeyId"], meta["Arn"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"state")["CiphertextBlob"]
    operations = {
        "Encrypt": lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"),
        "Decrypt": lambda: kms.decrypt(CiphertextBlob=blob),
        "GenerateDataKey": lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
        "GenerateDataKeyWithoutPlaintext": lambda: kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256"),
        "ReEncrypt": lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key_id),
    }
    kms.disable_key(KeyId=key_id)
    for name, call in operations.items():
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e) == ("DisabledException", f"{arn} is disabled."), name
    # Metadata operations still work on a disabled key.
    kms.describe_key(KeyId=key_id)
    kms.get_key_policy(KeyId=key_id)

    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"state"

    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    for name, call in operations.items():
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e) == ("KMSInvalidStateException", f"{arn} is pending deletion."), name
    kms.cancel_key_deletion(KeyId=key_id)
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"state"


def test_dry_run(kms, new_key):
    key_id = new_key()["KeyId"]
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=True)
    assert error_of(e) == ("DryRunOperationException",
                           "The request would have succeeded, but the DryRun option is set.")


def test_rotation_keeps_old_ciphertexts_decryptable(kms, new_key):
    key_id = new_key()["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False

    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert "NextRotationDate" in status
    for bad in (89, 2561):
        with pytest.raises(ClientError) as e:
            kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=bad)
        assert error_of(e)[0] == "ValidationException"

    before = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=CONTEXT)
    old_blobs = [kms.encrypt(KeyId=key_id, Plaintext=b"generation-0")["CiphertextBlob"]]
    material_ids = [before["KeyMaterialId"]]
    for generation in range(1, 4):
        assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == key_id
        data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        material_ids.append(data_key["KeyMaterialId"])
        old_blobs.append(kms.encrypt(KeyId=key_id, Plaintext=f"generation-{generation}".encode())["CiphertextBlob"])
    assert len(set(material_ids)) == 4
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == material_ids[-1]
    for generation, blob in enumerate(old_blobs):
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == f"generation-{generation}".encode()
    assert kms.decrypt(CiphertextBlob=before["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"] == before["Plaintext"]

    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"] * 3
    assert [r["KeyMaterialId"] for r in rotations] == material_ids[1:]
    assert [r["KeyMaterialState"] for r in rotations] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]
    everything = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert len(everything) == 4

    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_on_demand_rotation_limit(kms, new_key):
    meta = new_key()
    for _ in range(25):
        kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    with pytest.raises(ClientError) as e:
        kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    assert error_of(e) == ("LimitExceededException",
                           "The on-demand rotations limit has been reached for the given keyId. "
                           f"No more on-demand rotations can be performed for this key: {meta['Arn']}")


def test_rotation_refused_on_disabled_keys(kms, new_key):
    meta = new_key()
    kms.disable_key(KeyId=meta["KeyId"])
    for call in (lambda: kms.enable_key_rotation(KeyId=meta["KeyId"]),
                 lambda: kms.rotate_key_on_demand(KeyId=meta["KeyId"])):
        with pytest.raises(ClientError) as e:
            call()
        assert error_of(e) == ("DisabledException", f"{meta['Arn']} is disabled.")


def test_blob_is_base64_on_the_wire(kura, new_key):
    """The CLI shows blobs base64-encoded; decoding gives the versioned kura format."""
    key_id = new_key()["KeyId"]
    out = kura.aws("kms", "encrypt", "--key-id", key_id, "--plaintext", base64.b64encode(b"cli").decode())
    import json
    blob = base64.b64decode(json.loads(out.stdout)["CiphertextBlob"])
    assert blob[0] == 1  # format version
