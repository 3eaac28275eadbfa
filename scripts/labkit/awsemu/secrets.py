"""Secrets Manager as repoint reads it: CreateSecret, GetSecretValue and PutSecretValue over the
JSON 1.1 protocol (X-Amz-Target secretsmanager.<Action>), with versions and staging labels kept
the way AWS keeps them: a new AWSCURRENT version moves AWSPREVIOUS onto the version that had
AWSCURRENT. Secrets live per region; SecretId is a name or a full ARN.

    aws --endpoint-url URL secretsmanager create-secret --name lab/db --secret-string '{"username":..}'
    aws --endpoint-url URL secretsmanager put-secret-value --secret-id lab/db --secret-string ...
"""

import base64
import random
import string
import threading
import time
import uuid

from .wire import ApiError

ACCOUNT = "123456789012"
CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"
MAX_SECRET = 65536


def _not_found(what="secret"):
    return ApiError("ResourceNotFoundException", 400, "Secrets Manager can't find the specified %s." % what)


def _invalid(msg):
    return ApiError("InvalidParameterException", 400, msg)


def _value(p):
    """(SecretString, SecretBinary) from a request: exactly one of them."""
    s, b = p.get("SecretString"), p.get("SecretBinary")
    if (s is None) == (b is None):
        raise _invalid("You must provide either SecretString or SecretBinary, and not both.")
    if s is not None and (not isinstance(s, str) or len(s.encode()) > MAX_SECRET):
        raise _invalid("SecretString must be a string of at most %d bytes." % MAX_SECRET)
    if b is not None:
        try:
            if len(base64.b64decode(b, validate=True)) > MAX_SECRET:
                raise _invalid("SecretBinary is larger than %d bytes." % MAX_SECRET)
        except (ValueError, TypeError):
            raise _invalid("SecretBinary is not base64.")
    return s, b


class Secrets:
    def __init__(self, strict_regions=lambda: True):
        self.lock = threading.Lock()
        self.secrets = {}           # ARN -> {"ARN", "Name", "region", "versions": {id: {...}}, "created"}
        self.strict_regions = strict_regions

    # ---- lookup -------------------------------------------------------------------------------------
    def _find(self, p, region):
        sid = p.get("SecretId")
        if not isinstance(sid, str) or not sid:
            raise _invalid("SecretId is required.")
        for s in self.secrets.values():
            if sid == s["ARN"]:
                if s["region"] != region and self.strict_regions():
                    break
                return s
            if sid == s["Name"] and (s["region"] == region or not self.strict_regions()):
                return s
        raise _not_found()

    @staticmethod
    def _stage(s, label):
        for vid, v in s["versions"].items():
            if label in v["stages"]:
                return vid, v
        return None, None

    def _put(self, s, token, value, stages):
        vid = token or str(uuid.uuid4())
        old = s["versions"].get(vid)
        if old is not None:
            if (old["string"], old["binary"]) != value:
                raise ApiError("ResourceExistsException", 400,
                               "You can't modify an existing version, you can only create a new version.")
            return vid, old     # the same request again (ClientRequestToken is for idempotency)
        for label in stages:
            cur_id, cur = self._stage(s, label)
            if cur is not None:
                cur["stages"].remove(label)
                if label == CURRENT:
                    for v in s["versions"].values():
                        if PREVIOUS in v["stages"]:
                            v["stages"].remove(PREVIOUS)
                    cur["stages"].append(PREVIOUS)
        v = {"string": value[0], "binary": value[1], "stages": list(stages), "created": time.time()}
        s["versions"][vid] = v
        # versions without any label are gone (AWS deprecates them)
        for k in [k for k, x in s["versions"].items() if not x["stages"]]:
            del s["versions"][k]
        return vid, v

    # ---- actions --------------------------------------------------------------------------------
    def create_secret(self, p, region):
        name = p.get("Name")
        if not isinstance(name, str) or not name or len(name) > 512:
            raise _invalid("Name is required (at most 512 characters).")
        value = _value(p)
        with self.lock:
            if any(s["Name"] == name and s["region"] == region for s in self.secrets.values()):
                raise ApiError("ResourceExistsException", 400,
                               "The operation failed because the secret %s already exists." % name)
            suffix = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(6))
            arn = "arn:aws:secretsmanager:%s:%s:secret:%s-%s" % (region, ACCOUNT, name, suffix)
            s = {"ARN": arn, "Name": name, "region": region, "versions": {}, "created": time.time()}
            vid, _ = self._put(s, p.get("ClientRequestToken"), value, [CURRENT])
            self.secrets[arn] = s
            return {"ARN": arn, "Name": name, "VersionId": vid}

    def get_secret_value(self, p, region):
        with self.lock:
            s = self._find(p, region)
            vid, stage = p.get("VersionId"), p.get("VersionStage")
            if vid is not None:
                v = s["versions"].get(vid)
                if v is None or (stage is not None and stage not in v["stages"]):
                    raise _not_found("secret value for VersionId: %s" % vid)
            else:
                vid, v = self._stage(s, stage or CURRENT)
                if v is None:
                    raise _not_found("secret value for staging label: %s" % (stage or CURRENT))
            out = {"ARN": s["ARN"], "Name": s["Name"], "VersionId": vid, "VersionStages": list(v["stages"]),
                   "CreatedDate": round(v["created"], 3)}
            if v["string"] is not None:
                out["SecretString"] = v["string"]
            else:
                out["SecretBinary"] = v["binary"]
            return out

    def put_secret_value(self, p, region):
        value = _value(p)
        stages = p.get("VersionStages") or [CURRENT]
        if not isinstance(stages, list) or not all(isinstance(x, str) and x for x in stages):
            raise _invalid("VersionStages must be a list of labels.")
        with self.lock:
            s = self._find(p, region)
            vid, v = self._put(s, p.get("ClientRequestToken"), value, stages)
            return {"ARN": s["ARN"], "Name": s["Name"], "VersionId": vid, "VersionStages": list(v["stages"])}

    def describe(self):
        """For /_lab/models: names and versions, never the values."""
        with self.lock:
            return {s["ARN"]: {"name": s["Name"], "region": s["region"],
                               "versions": {k: v["stages"] for k, v in s["versions"].items()}}
                    for s in self.secrets.values()}
