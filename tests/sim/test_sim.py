#!/usr/bin/env python3
"""Tests of the Civis API simulator itself: auth, every endpoint, the S3 side,
every fault kind, and (with Prism in front) contract validation.

    python3 tests/sim/test_sim.py [-v] [TestClass.test_name ...]

SIM_FLOOD_LINES (default 1000000) sets the size of the log flood measurement."""

import base64
import hashlib
import http.client
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Contract, SimHarness  # noqa: E402

MiB = 1 << 20
CONTRACT = None


def contract():
    global CONTRACT
    if CONTRACT is None:
        CONTRACT = Contract()
    return CONTRACT


def form_body(fields, file_data, file_pos=None, boundary="----simtest7MA4YWxkTrZu0gW",
              filename="data.bin"):
    """A multipart/form-data body: fields in order, the file part at file_pos (None: last)."""
    parts = []
    for k, v in fields:
        parts.append(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                     % (boundary.encode(), k.encode(), v.encode()))
    fpart = (b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n" % (boundary.encode(), filename.encode())
             + file_data + b"\r\n")
    parts.insert(len(parts) if file_pos is None else file_pos, fpart)
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return body, "multipart/form-data; boundary=%s" % boundary


def raw_request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def url_port_path(url):
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    return int(hostport.rsplit(":", 1)[1]), "/" + path


class SimCase(unittest.TestCase):
    """One simulator for the class, reset before each test."""
    use_prism = False
    sim_args = ()
    h = None

    @classmethod
    def setUpClass(cls):
        cls.h = SimHarness(use_prism=cls.use_prism, sim_args=cls.sim_args)
        cls.h.start()

    @classmethod
    def tearDownClass(cls):
        if cls.h:
            cls.h.stop()

    def setUp(self):
        self.h.reset()
        self.mark = self.h.prism_mark()

    # an API call whose answer must be `status` and valid against the contract
    def call(self, method, path, body=None, status=None, **kw):
        st, hdrs, data = self.h.api(method, path, body, **kw)
        if status is not None:
            self.assertEqual(st, status, "%s %s -> %d %r" % (method, path, st, data[:300]))
        if 200 <= st < 300:
            errs = contract().validate_response(method, path, st, data)
            self.assertEqual(errs, [], "%s %s: answer breaks the contract" % (method, path))
        return st, hdrs, data

    def new_form_file(self, name="out.csv"):
        _, _, data = self.call("POST", "files/", {"name": name}, 201)
        return json.loads(data)

    def form_upload(self, fp, payload, fields=None, file_pos=None, headers=None):
        fields = list(fp["uploadFields"].items()) if fields is None else fields
        body, ctype = form_body(fields, payload, file_pos)
        port, path = url_port_path(fp["uploadUrl"])
        h = {"Content-Type": ctype}
        h.update(headers or {})
        return raw_request(port, "POST", path, body, h)


class TestApi(SimCase):

    def test_auth_required(self):
        st, hdrs, body = self.h.api("GET", self.h.run_path(), auth=False)
        self.assertEqual(st, 401)
        self.assertIn("basic", hdrs.get("www-authenticate", "").lower())
        self.assertEqual(json.loads(body)["code"], 401)
        st, _, _ = self.h.api("GET", self.h.run_path(), auth=False,
                              headers={"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()})
        self.assertEqual(st, 401)
        st, _, _ = self.h.api("GET", self.h.run_path(), auth=False,
                              headers={"Authorization": "Basic " + base64.b64encode(
                                  (self.h.api_key + ":x").encode()).decode()})
        self.assertEqual(st, 401, "a non-empty password is not the key")
        st, _, _ = self.h.api("GET", self.h.run_path(), auth=False,
                              headers={"Authorization": "Bearer " + self.h.api_key})
        self.assertEqual(st, 200)
        reqs = self.h.requests()
        self.assertEqual([r["auth"] for r in reqs], ["none", "basic-bad", "basic-bad", "bearer-ok"])
        self.assertNotIn(self.h.api_key, json.dumps(reqs), "the key is never recorded")

    def test_logs_post_batch_single_and_read_back(self):
        self.call("POST", self.h.run_path("/logs"), {"messages": [
            {"message": "second", "level": "info", "createdAt": "2026-11-27T17:00:00.000000002Z"},
            {"message": "first", "level": "error", "createdAt": "2026-11-27T17:00:00.000000001Z"},
            {"message": "no time"},
            {"message": "snake", "created_at": "2026-11-27T16:00:00Z"}]}, 204)
        self.call("POST", self.h.run_path("/logs"), {"message": "single", "level": "warn"}, 204)
        logs = self.h.logs()
        self.assertEqual([x["message"] for x in logs], ["second", "first", "no time", "snake", "single"])
        self.assertEqual(logs[1]["level"], "error")
        self.assertEqual(logs[2]["level"], "info")
        self.assertEqual(logs[0]["requestSeq"], logs[3]["requestSeq"])
        self.assertNotEqual(logs[0]["requestSeq"], logs[4]["requestSeq"])
        self.assertRegex(logs[2]["createdAt"], r"\.\d{9}Z$")
        _, _, data = self.call("GET", self.h.run_path("/logs"), status=200)
        got = [x["message"] for x in json.loads(data)]
        self.assertEqual(got[:3], ["snake", "first", "second"], "sorted by createdAt")
        _, _, data = self.call("GET", self.h.run_path("/logs?last_id=2&limit=2"), status=200)
        self.assertEqual([x["id"] for x in json.loads(data)], [3, 4])
        self.assertEqual(self.h.log_messages()[-1], "single")

    def test_logs_rejects_bad_input(self):
        p = self.h.run_path("/logs")
        for bad in ({"messages": [{"level": "info"}]}, {"messages": "x"},
                    {"messages": [{"message": "x", "createdAt": "yesterday"}]},
                    {"messages": [{"message": 5}]}, {}):
            st, _, body = self.h.api("POST", p, bad)
            self.assertEqual(st, 400, bad)
            self.assertEqual(set(json.loads(body)), {"error", "errorDescription", "code"})
        st, _, _ = self.h.api("POST", p, raw_body=b"not json", headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        st, _, _ = self.h.api("POST", p, raw_body=b'{"message":"x"}', headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 415)
        self.assertEqual(self.h.state()["logs"], 0)
        self.assertEqual([v["kind"] for v in self.h.violations()], ["content_type"])

    def test_heartbeats(self):
        for _ in range(3):
            self.call("POST", self.h.run_path("/heartbeats"), status=204)
        hb = self.h.heartbeats()
        self.assertEqual(len(hb), 3)
        self.assertTrue(hb[0]["mono"] <= hb[1]["mono"] <= hb[2]["mono"])
        self.assertLess(abs(hb[2]["wall"] - time.time()), 30)
        self.assertEqual(hb[0]["jobId"], self.h.job_id)

    def test_run_state_cancel_patch(self):
        _, _, data = self.call("GET", self.h.run_path(), status=200)
        run = json.loads(data)
        self.assertEqual((run["id"], run["containerId"], run["state"], run["isCancelRequested"]),
                         (self.h.run_id, self.h.job_id, "running", False))
        self.h.set_run(isCancelRequested=True)
        self.assertTrue(json.loads(self.call("GET", self.h.run_path(), status=200)[2])["isCancelRequested"])
        self.h.set_run(isCancelRequested=False, state="queued")
        self.call("DELETE", self.h.run_path(), status=202)
        run = json.loads(self.call("GET", self.h.run_path(), status=200)[2])
        self.assertTrue(run["isCancelRequested"])
        self.call("PATCH", self.h.run_path(), {"state": "succeeded",
                                               "bocceStartedAt": "2026-11-27T17:00:00Z"}, 204)
        run = json.loads(self.call("GET", self.h.run_path(), status=200)[2])
        self.assertEqual(run["state"], "succeeded")
        self.assertIsNotNone(run["finishedAt"])
        self.assertEqual(self.h.api("PATCH", self.h.run_path(), {"state": "bogus"})[0], 400)
        _, _, data = self.call("GET", "scripts/containers/%d/runs" % self.h.job_id, status=200)
        self.assertEqual(len(json.loads(data)), 1)
        self.assertEqual(self.h.api("GET", "scripts/containers/%d/runs/%d" % (self.h.job_id, 999))[0], 404)
        self.assertEqual(self.h.api("GET", "scripts/containers/%d/runs/%d/logs" % (5, self.h.run_id))[0], 404)
        self.assertEqual(self.h.api("GET", "nothing/here")[0], 404)

    def test_outputs(self):
        fp = self.new_form_file("o.txt")
        _, _, data = self.call("POST", self.h.run_path("/outputs"),
                               {"objectType": "File", "objectId": fp["id"]}, 202)
        self.assertEqual(json.loads(data)["objectId"], fp["id"])
        self.call("POST", self.h.run_path("/outputs"), {"object_type": "File", "object_id": fp["id"]}, 202)
        self.call("POST", self.h.run_path("/outputs"), {"objectType": "Table", "objectId": 7}, 202)
        self.assertEqual(self.h.api("POST", self.h.run_path("/outputs"),
                                    {"objectType": "File", "objectId": 424242})[0], 404)
        self.assertEqual(self.h.api("POST", self.h.run_path("/outputs"),
                                    {"objectType": "Nope", "objectId": 1})[0], 400)
        self.assertEqual(self.h.api("POST", self.h.run_path("/outputs"),
                                    {"objectType": "File", "objectId": "1"})[0], 400)
        _, _, data = self.call("GET", self.h.run_path("/outputs"), status=200)
        self.assertEqual([(o["objectType"], o["objectId"]) for o in json.loads(data)],
                         [("File", fp["id"]), ("Table", 7)])
        self.assertEqual(len(self.h.outputs()), 3, "every registration call is recorded")

    def test_json_values(self):
        _, _, data = self.call("POST", "json_values/", {"name": "outputs",
                                                         "valueStr": '{"rows": 10, "ok": true}'}, 201)
        jv = json.loads(data)
        self.assertEqual((jv["name"], jv["value"]), ("outputs", {"rows": 10, "ok": True}))
        _, _, data = self.call("GET", "json_values/%d" % jv["id"], status=200)
        self.assertEqual(json.loads(data), jv)
        for text, value in (("3.5", 3.5), ('"s"', "s"), ("[1, null]", [1, None]), ("null", None)):
            _, _, data = self.call("POST", "json_values/", {"valueStr": text}, 201)
            self.assertEqual(json.loads(data)["value"], value)
            self.assertIsNone(json.loads(data)["name"])
        self.call("POST", "json_values/", {"name": "snake", "value_str": "1"}, 201)
        big = json.dumps("x" * (1000000 - 2))             # exactly 1,000,000 bytes
        self.call("POST", "json_values/", {"name": "big", "valueStr": big}, 201)
        self.assertEqual(self.h.violations(), [])
        st, _, body = self.h.api("POST", "json_values/", {"name": "big", "valueStr": big + " "})
        self.assertEqual(st, 400)
        self.assertIn("1000000", json.loads(body)["errorDescription"])
        self.assertEqual([v["kind"] for v in self.h.violations()], ["json_value_too_big"])
        for bad in ({"name": "x"}, {"valueStr": "{nope"}, {"valueStr": 5}, {"name": 1, "valueStr": "1"}):
            self.assertEqual(self.h.api("POST", "json_values/", bad)[0], 400, bad)
        self.assertEqual(self.h.api("GET", "json_values/999999")[0], 404)
        rows = self.h.json_values()
        self.assertEqual(len(rows), 7)
        self.assertEqual(rows[0]["valueStr"], '{"rows": 10, "ok": true}')
        self.assertEqual(rows[-1]["size"], 1000000)
        self.assertEqual(self.h.state()["jsonValues"], 7)
        self.assertEqual(self.h.wait_for(timeout=1, jsonValues=7)["jsonValues"], 7)

    def test_outputs_of_every_type(self):
        fp = self.new_form_file("f.csv")
        jv = json.loads(self.call("POST", "json_values/", {"name": "outputs",
                                                            "valueStr": '{"a": [1, 2]}'}, 201)[2])
        p = self.h.run_path("/outputs")
        _, _, data = self.call("POST", p, {"objectType": "JSONValue", "objectId": jv["id"]}, 202)
        self.assertEqual(json.loads(data), {"objectType": "JSONValue", "objectId": jv["id"],
                                            "name": "outputs", "value": {"a": [1, 2]},
                                            "link": "api.civis.test/json_values/%d" % jv["id"]})
        self.assertEqual(self.h.api("POST", p, {"objectType": "JSONValue", "objectId": 999999})[0], 404)
        self.call("POST", p, {"objectType": "File", "objectId": fp["id"]}, 202)
        for t in ("Table", "Report", "Project", "Credential"):   # any id exists by default
            _, _, data = self.call("POST", p, {"objectType": t, "objectId": 42}, 202)
            self.assertEqual((json.loads(data)["objectType"], json.loads(data)["name"]), (t, None))
        # the control API declares ids unknown, or a type strict with named known ids
        self.h.set_objects("Table", unknown=[13])
        self.assertEqual(self.h.api("POST", p, {"objectType": "Table", "objectId": 13})[0], 404)
        self.call("POST", p, {"objectType": "Table", "objectId": 14}, 202)
        self.h.set_objects("Report", known=[{"id": 5, "name": "weekly"}, 6], strict=True)
        self.assertEqual(json.loads(self.call("POST", p, {"objectType": "Report", "objectId": 5},
                                              202)[2])["name"], "weekly")
        self.call("POST", p, {"objectType": "Report", "objectId": 6}, 202)
        self.assertEqual(self.h.api("POST", p, {"objectType": "Report", "objectId": 7})[0], 404)
        objs = self.h.control("GET", "objects")
        self.assertEqual((objs["Table"]["unknown"], objs["Report"]["strict"]), ([13], True))
        # the fault plan can refuse any one registration too
        self.h.set_faults([{"path": "/" + p, "method": "POST", "action": "status", "status": 404,
                            "count": 1}])
        self.assertEqual(self.h.api("POST", p, {"objectType": "Project", "objectId": 1})[0], 404)
        self.h.clear_faults()
        _, _, data = self.call("POST", p, {"objectType": "Project", "objectId": 1}, 202)
        got = json.loads(self.call("GET", p, status=200)[2])
        self.assertEqual([(o["objectType"], o["objectId"]) for o in got],
                         [("JSONValue", jv["id"]), ("File", fp["id"]), ("Table", 42), ("Report", 42),
                          ("Project", 42), ("Credential", 42), ("Table", 14), ("Report", 5),
                          ("Report", 6), ("Project", 1)])
        for o in got:
            self.assertEqual(set(o), {"objectType", "objectId", "name", "link", "value"})
        rec = self.h.outputs()
        self.assertEqual(rec[0]["value"], {"a": [1, 2]})
        self.assertEqual(rec[0]["name"], "outputs")
        self.assertEqual(rec[1]["name"], "f.csv")
        self.h.reset()
        self.assertEqual(self.h.control("GET", "objects")["Table"]["unknown"], [], "reset forgets")

    def test_files_post_fields(self):
        fp = self.new_form_file("a b.csv")
        self.assertIsNone(fp["fileSize"])
        port, path = url_port_path(fp["uploadUrl"])
        self.assertEqual(port, self.h.storage_port)
        for k in ("key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date",
                  "x-amz-signature", "success_action_status"):
            self.assertIn(k, fp["uploadFields"])
        _, _, data = self.call("POST", "files/", {"name": "k.csv", "expires_at": None}, 201)
        self.assertIsNone(json.loads(data)["expiresAt"])
        _, _, data = self.call("POST", "files/", {"name": "k.csv", "expiresAt": "2030-01-01T00:00:00Z"}, 201)
        self.assertEqual(json.loads(data)["expiresAt"], "2030-01-01T00:00:00Z")
        self.assertEqual(self.h.api("POST", "files/", {"nom": "x"})[0], 400)
        self.assertEqual(self.h.api("POST", "files/", {"name": ""})[0], 400)
        self.assertEqual(self.h.api("POST", "files/", {"name": "x" * 1001})[0], 400)
        self.assertEqual(self.h.api("GET", "files/999999")[0], 404)

    def test_form_upload_records_sha256(self):
        fp = self.new_form_file("dir/data ü.bin")
        payload = os.urandom(3 * MiB + 17) + b"\r\n--" + b"x" * 100  # boundary look-alike inside
        st, hdrs, body = self.form_upload(fp, payload, headers={"X-Test": "1"})
        self.assertEqual(st, 201, body)
        self.assertIn(b"<PostResponse>", body)
        # the default ETag: the SHA-256's first 32 hex digits (one hash pass)
        self.assertEqual(hdrs["etag"], '"%s"' % hashlib.sha256(payload).hexdigest()[:32])
        f = [x for x in self.h.files() if x["id"] == fp["id"]][0]
        self.assertTrue(f["complete"])
        self.assertEqual(f["size"], len(payload))
        self.assertEqual(f["sha256"], hashlib.sha256(payload).hexdigest())
        self.assertEqual(f["uploads"][0]["headers"]["X-Test"], "1")
        self.assertEqual(f["uploads"][0]["fields"][-1], "file")
        _, _, data = self.call("GET", "files/%d" % fp["id"], status=200)
        meta = json.loads(data)
        self.assertEqual(meta["fileSize"], len(payload))
        self.assertEqual(self.h.file_data(fp["id"]), payload)
        port, path = url_port_path(meta["downloadUrl"])
        st, _, got = raw_request(port, "GET", path)
        self.assertEqual((st, got), (200, payload))
        self.assertEqual(self.h.violations(), [])
        # etag md5: S3's own ETag, the MD5
        self.h.set_config(etag="md5")
        fp = self.new_form_file("m.bin")
        st, hdrs, _ = self.form_upload(fp, payload)
        self.assertEqual((st, hdrs["etag"]), (201, '"%s"' % hashlib.md5(payload).hexdigest()))
        f = [x for x in self.h.files() if x["id"] == fp["id"]][0]
        self.assertEqual((f["md5"], f["etag"]), (hashlib.md5(payload).hexdigest(),) * 2)

    def test_form_upload_without_success_status_field_gets_204(self):
        fp = self.new_form_file()
        # the field is issued, so leaving it out is rejected: S3 checks the policy
        fields = [(k, v) for k, v in fp["uploadFields"].items() if k != "success_action_status"]
        st, _, body = self.form_upload(fp, b"x", fields=fields)
        self.assertEqual(st, 400)
        self.assertIn(b"<Code>InvalidArgument</Code>", body)

    def test_form_rejections(self):
        fp = self.new_form_file()
        fields = list(fp["uploadFields"].items())
        st, _, body = self.form_upload(fp, b"abc", file_pos=2)
        self.assertEqual(st, 400)
        self.assertIn(b"<Error><Code>InvalidArgument</Code>", body)
        self.assertIn(b"last field", body)
        st, _, body = self.form_upload(fp, b"abc", fields=[f for f in fields if f[0] != "policy"])
        self.assertEqual(st, 400)
        self.assertIn(b"policy", body)
        st, _, body = self.form_upload(fp, b"abc", fields=fields + [("Content-Type", "text/csv")])
        self.assertEqual(st, 403)
        self.assertIn(b"Extra input fields", body)
        st, _, body = self.form_upload(fp, b"abc", fields=[(k, v + "x" if k == "policy" else v)
                                                           for k, v in fields])
        self.assertEqual(st, 403)
        st, _, body = self.form_upload(fp, b"abc", headers={"Authorization": "Basic eDo="})
        self.assertEqual(st, 400)
        self.assertIn(b"Only one auth mechanism", body)
        kinds = [v["kind"] for v in self.h.violations()]
        self.assertEqual(kinds, ["file_not_last", "missing_field", "extra_field", "field_mismatch",
                                 "authorization_to_storage"])
        self.assertFalse([f for f in self.h.files() if f["complete"]])
        # and after all that, a correct upload on the same record still works
        self.assertEqual(self.form_upload(fp, b"abc")[0], 201)

    def test_storage_requires_content_length(self):
        fp = self.new_form_file()
        body, ctype = form_body(list(fp["uploadFields"].items()), b"abc")
        port, path = url_port_path(fp["uploadUrl"])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", path, body=iter([body]), headers={"Content-Type": ctype},
                         encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass    # the 411 and the close may come before the last chunk
        r = conn.getresponse()
        data = r.read()
        conn.close()
        self.assertEqual(r.status, 411)
        self.assertIn(b"<Code>MissingContentLength</Code>", data)
        self.assertEqual([v["kind"] for v in self.h.violations()], ["missing_content_length"])

    def multipart(self, sizes, name="big.bin"):
        _, _, data = self.call("POST", "files/multipart", {"name": name, "numParts": len(sizes)}, 201)
        mp = json.loads(data)
        self.assertEqual(len(mp["uploadUrls"]), len(sizes))
        return mp

    def put_part(self, url, data, headers=None):
        port, path = url_port_path(url)
        return raw_request(port, "PUT", path, data, headers)

    def test_multipart_upload(self):
        mp = self.multipart([5 * MiB, 5 * MiB, 1000], name="dir/big file%.bin")
        chunks = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1000)]
        self.h.set_config(etag="md5")              # S3's ETags, to check them
        for i in (2, 0, 1):                        # any order, and a retried part
            st, hdrs, _ = self.put_part(mp["uploadUrls"][i], chunks[i])
            self.assertEqual(st, 200)
            self.assertEqual(hdrs["etag"], '"%s"' % hashlib.md5(chunks[i]).hexdigest())
        self.assertEqual(self.put_part(mp["uploadUrls"][0], chunks[0])[0], 200)
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)  # idempotent
        whole = b"".join(chunks)
        f = [x for x in self.h.files() if x["id"] == mp["id"]][0]
        self.assertEqual((f["size"], f["sha256"]), (len(whole), hashlib.sha256(whole).hexdigest()))
        self.assertEqual([p["n"] for p in f["parts"]], [1, 2, 3])
        tags = b"".join(hashlib.md5(c).digest() for c in chunks)
        self.assertEqual(f["md5"], "%s-3" % hashlib.md5(tags).hexdigest(), "S3's multipart ETag")
        self.assertEqual(self.h.file_data(mp["id"]), whole)
        self.assertEqual(json.loads(self.call("GET", "files/%d" % mp["id"], status=200)[2])["fileSize"],
                         len(whole))
        self.assertEqual(self.h.violations(), [])

    def test_opaque_etag_hashes_when_asked(self):
        # etag opaque (the upload bench's): no hash while the bytes arrive, a
        # unique token for an ETag, the SHA-256 from the stored bytes when asked
        self.h.set_config(etag="opaque")
        payload = os.urandom(3 * MiB + 5)
        fp = self.new_form_file("o.bin")
        st, hdrs, _ = self.form_upload(fp, payload)
        self.assertEqual(st, 201)
        form_tag = hdrs["etag"].strip('"')
        self.assertRegex(form_tag, "^[0-9a-f]{32}$")
        self.assertNotEqual(form_tag, hashlib.sha256(payload).hexdigest()[:32])
        mp = self.multipart([5 * MiB, 1000], name="o2.bin")
        chunks = [os.urandom(5 * MiB), os.urandom(1000)]
        tags = []
        for i in (0, 1):
            st, hdrs, _ = self.put_part(mp["uploadUrls"][i], chunks[i])
            self.assertEqual(st, 200)
            tags.append(hdrs["etag"].strip('"'))
        self.assertEqual(len(set(tags + [form_tag])), 3)
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)
        byid = {x["id"]: x for x in self.h.files()}
        self.assertEqual(byid[fp["id"]]["sha256"], hashlib.sha256(payload).hexdigest())
        self.assertIsNone(byid[fp["id"]]["md5"])
        whole = b"".join(chunks)
        self.assertEqual(byid[mp["id"]]["sha256"], hashlib.sha256(whole).hexdigest())
        self.assertEqual([p["sha256"] for p in byid[mp["id"]]["parts"]], [None, None])
        self.assertEqual(self.h.file_data(mp["id"]), whole)
        self.assertEqual(self.h.violations(), [])

    def test_multipart_rejections(self):
        mp = self.multipart([1, 1])
        self.assertEqual(self.put_part(mp["uploadUrls"][0], b"small")[0], 200)
        st, _, body = self.h.api("POST", "files/multipart/%d/complete" % mp["id"])
        self.assertEqual(st, 400)
        self.assertIn("InvalidPart", json.loads(body)["errorDescription"])
        self.assertEqual(self.put_part(mp["uploadUrls"][1], b"last")[0], 200)
        st, _, body = self.h.api("POST", "files/multipart/%d/complete" % mp["id"])
        self.assertEqual(st, 400)
        self.assertIn("EntityTooSmall", json.loads(body)["errorDescription"])
        st, _, body = self.put_part(mp["uploadUrls"][0].replace("X-Amz-Signature=", "X-Amz-Signature=0"), b"x")
        self.assertEqual(st, 403)
        self.assertIn(b"SignatureDoesNotMatch", body)
        st, _, body = self.put_part(mp["uploadUrls"][0], b"x", {"Authorization": "Basic eDo="})
        self.assertEqual(st, 400)
        port, path = url_port_path(mp["uploadUrls"][0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("PUT", path, body=iter([b"abc"]), encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass    # S3-like: it answers 411 and closes before the last chunk
        r = conn.getresponse()
        r.read()
        conn.close()
        self.assertEqual(r.status, 411)
        self.assertEqual(self.h.api("POST", "files/multipart", {"name": "x", "numParts": 0})[0], 400)
        self.assertEqual(self.h.api("POST", "files/multipart", {"name": "x", "numParts": 10001})[0], 400)
        self.call("POST", "files/multipart", {"name": "x", "num_parts": 2}, 201)
        kinds = [v["kind"] for v in self.h.violations()]
        self.assertEqual(kinds, ["complete_missing_parts", "part_too_small", "bad_signature",
                                 "authorization_to_storage", "missing_content_length"])

    def test_wait_blocks_until_logs(self):
        def later():
            time.sleep(0.3)
            self.h.api("POST", self.h.run_path("/logs"), {"messages": [{"message": "a"}, {"message": "b"}]})
        threading.Thread(target=later).start()
        t0 = time.monotonic()
        r = self.h.wait_logs(2, timeout=10)
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)
        self.assertEqual(r["logs"], 2)
        with self.assertRaises(AssertionError):
            self.h.wait_logs(3, timeout=0.2)

    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.h.api_port, timeout=10)
        auth = {"Authorization": "Basic " + base64.b64encode((self.h.api_key + ":").encode()).decode(),
                "Content-Type": "application/json"}
        conn.request("POST", "/" + self.h.run_path("/heartbeats"), headers=auth)
        r = conn.getresponse()
        r.read()
        sock = conn.sock
        for _ in range(5):
            conn.request("POST", "/" + self.h.run_path("/logs"), body=b'{"message":"k"}', headers=auth)
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 204)
        self.assertIs(conn.sock, sock, "one connection for all requests")
        conn.close()


class TestRequestParsing(SimCase):
    """The handler's own request-line and header reader (not the email package)."""

    def raw(self, data, port=None, read_until_close=True):
        s = socket.create_connection(("127.0.0.1", port or self.h.api_port), timeout=10)
        s.sendall(data)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
            if not read_until_close and b"\r\n\r\n" in out:
                break
        s.close()
        return out

    def auth(self):
        return b"Basic " + base64.b64encode((self.h.api_key + ":").encode())

    def test_headers_any_case_folded_first_wins(self):
        body = b'{"message":"m1"}'
        req = (b"POST /%s HTTP/1.1\r\nhost: x\r\nAUTHORIZATION: %s\r\ncontent-type: application/json\r\n"
               b"X-Folded: a\r\n  b\r\nX-Twice: first\r\nX-Twice: second\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
               % (self.h.run_path("/logs").encode(), self.auth(), len(body), body))
        out = self.raw(req)
        self.assertTrue(out.startswith(b"HTTP/1.1 204 "), out[:200])
        self.assertEqual(self.h.log_messages(), ["m1"])
        hdrs = self.h.requests()[-1]["headers"]
        self.assertEqual((hdrs["X-Folded"], hdrs["AUTHORIZATION"]), ("a b", "Basic <redacted>"))
        self.assertEqual(self.h.requests()[-1]["auth"], "basic-ok")

    def test_bad_request_lines_and_too_many_headers(self):
        self.assertTrue(self.raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 "))
        self.assertTrue(self.raw(b"GET / HTTP/x.y\r\n\r\n").startswith(b"HTTP/1.1 400 "))
        self.assertTrue(self.raw(b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 "))
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        self.assertTrue(self.raw(b"GET / HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.1 431 "))
        self.assertEqual(self.h.api("GET", self.h.run_path())[0], 200, "still serving")

    def test_expect_100_continue(self):
        fp = self.new_form_file("e.bin")
        body, ctype = form_body(list(fp["uploadFields"].items()), b"expect")
        port, path = url_port_path(fp["uploadUrl"])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % (path.encode(), ctype.encode(), len(body)))
        first = s.recv(4096)
        self.assertTrue(first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first)
        s.sendall(body)
        out = b""
        while b"</PostResponse>" not in out:
            d = s.recv(65536)
            if not d:
                break
            out += d
        s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 201 "), out[:200])
        self.assertEqual(self.h.file_data(fp["id"]), b"expect")


class TestStorageSpeedPath(SimCase):
    """The fast storage path (receive buffers, hash threads, spare files) stores
    the bytes exactly, whatever falls on a buffer's edge."""

    def test_delimiter_look_alikes_on_buffer_edges(self):
        boundary = "----simtest7MA4YWxkTrZu0gW"
        near = b"\r\n--" + boundary.encode()[:-1]        # all but the last byte
        chunks = []
        for i in range(40):                               # look-alikes every ~117 KiB, over 4 MiB
            chunks.append(os.urandom(117 * 1024 + i))
            chunks.append(near + (b"X" if i % 2 else b""))
        payload = b"".join(chunks) + b"\r\n--" + boundary[:10].encode()
        for size in (len(payload), 2 * MiB - 3, 2 * MiB + 5, 1):
            fp = self.new_form_file("edge.bin")
            data = payload[:size]
            st, _, body = self.form_upload(fp, data)
            self.assertEqual(st, 201, body)
            f = [x for x in self.h.files() if x["id"] == fp["id"]][0]
            self.assertEqual((f["size"], f["sha256"]), (len(data), hashlib.sha256(data).hexdigest()))
            self.assertEqual(self.h.file_data(fp["id"]), data)

    def test_spare_files_reused_exactly(self):
        with SimHarness() as h:                           # its own: no spares yet
            def new(name):
                _, _, data = h.api("POST", "files/multipart", {"name": name, "numParts": 1})
                return json.loads(data)
            big = os.urandom(6 * MiB)
            mp = new("a.bin")
            self.assertEqual(self.put_part(mp["uploadUrls"][0], big)[0], 200)
            self.assertEqual(h.state()["spares"], {"files": 0, "bytes": 0})
            h.reset()                                     # the 6 MiB file becomes a spare
            self.assertEqual(h.state()["spares"], {"files": 1, "bytes": 6 * MiB})
            small = os.urandom(3 * MiB + 1)               # reuses it: overwritten, then cut
            mp = new("b.bin")
            self.assertEqual(self.put_part(mp["uploadUrls"][0], small)[0], 200)
            self.assertEqual(h.api("POST", "files/multipart/%d/complete" % mp["id"])[0], 204)
            self.assertEqual(h.state()["spares"]["files"], 0)
            self.assertEqual(h.file_data(mp["id"]), small)
            self.assertEqual(h.files()[0]["sha256"], hashlib.sha256(small).hexdigest())
            h.reset()
            mp = new("c.bin")                             # and again, bigger than the spare
            self.assertEqual(self.put_part(mp["uploadUrls"][0], big + b"z")[0], 200)
            self.assertEqual(h.api("POST", "files/multipart/%d/complete" % mp["id"])[0], 204)
            self.assertEqual(h.file_data(mp["id"]), big + b"z")

    def put_part(self, url, data):
        port, path = url_port_path(url)
        return raw_request(port, "PUT", path, data)

    def test_parallel_parts_and_lazy_whole_hash(self):
        chunks = [os.urandom(5 * MiB + i) for i in range(5)]
        mp = json.loads(self.call("POST", "files/multipart", {"name": "p.bin", "numParts": 5}, 201)[2])
        res = [None] * 5
        ts = [threading.Thread(target=lambda i=i: res.__setitem__(
            i, self.put_part(mp["uploadUrls"][i], chunks[i]))) for i in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual([r[0] for r in res], [200] * 5)
        self.assertEqual([r[1]["etag"] for r in res],
                         ['"%s"' % hashlib.sha256(c).hexdigest()[:32] for c in chunks])
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)
        f = self.h.files()[0]
        whole = b"".join(chunks)
        self.assertEqual((f["size"], f["sha256"]), (len(whole), hashlib.sha256(whole).hexdigest()))
        self.assertEqual([p["sha256"] for p in f["parts"]], [hashlib.sha256(c).hexdigest() for c in chunks])

    def test_client_gone_mid_body(self):
        mp = json.loads(self.call("POST", "files/multipart", {"name": "g.bin", "numParts": 1}, 201)[2])
        port, path = url_port_path(mp["uploadUrls"][0])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), 10 * MiB))
        s.sendall(os.urandom(3 * MiB))
        s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.h.requests("storage")[-1]["status"] is None:
            time.sleep(0.05)
        self.assertEqual(self.h.requests("storage")[-1]["status"], -1)
        self.assertEqual(self.h.files()[0]["parts"], [])
        data = os.urandom(1000)
        self.assertEqual(self.put_part(mp["uploadUrls"][0], data)[0], 200, "still serving")
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)
        self.assertEqual(self.h.file_data(mp["id"]), data)


class TestFaults(SimCase):

    def log(self, msg="x", **kw):
        return self.h.api("POST", self.h.run_path("/logs"), {"message": msg}, **kw)

    def test_status_count_and_retry_after(self):
        self.h.set_faults([{"path": "/scripts/", "action": "status", "status": 503, "count": 2,
                            "retryAfter": "3"}])
        st, hdrs, body = self.log("a")
        self.assertEqual((st, hdrs.get("retry-after")), (503, "3"))
        self.assertEqual(json.loads(body)["code"], 503)
        self.assertEqual(self.log("b")[0], 503)
        self.assertEqual(self.log("c")[0], 204)
        self.assertEqual(self.h.log_messages(), ["c"], "a refused request stores nothing")
        f = self.h.faults()[0]
        self.assertEqual((f["seen"], f["applied"]), (3, 2))
        self.assertEqual([r["status"] for r in self.h.requests()], [503, 503, 204])

    def test_every_after_method_and_path(self):
        self.h.set_faults([{"action": "status", "status": 500, "every": 3, "method": "POST",
                            "path": self.h.run_path("/logs").join(["/", ""])}])
        got = [self.log(str(i))[0] for i in range(6)]
        self.assertEqual(got, [204, 204, 500, 204, 204, 500])
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 204)
        self.h.set_faults([{"action": "status", "status": 429, "after": 2, "count": 1, "retryAfter": 1}])
        got = [self.log()[0] for _ in range(4)]
        self.assertEqual(got, [204, 204, 429, 204])

    def test_time_window(self):
        self.h.set_faults([{"action": "status", "status": 503, "start": 0.3, "duration": 0.4}])
        self.assertEqual(self.log()[0], 204)
        time.sleep(0.4)
        self.assertEqual(self.log()[0], 503)
        time.sleep(0.45)
        self.assertEqual(self.log()[0], 204)

    def test_status_401_and_storage_store_flag(self):
        self.h.set_faults([{"action": "status", "status": 401, "count": 1}])
        st, hdrs, _ = self.log()
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", hdrs)
        self.h.set_faults([{"action": "status", "status": 500, "count": 1, "store": True}])
        self.assertEqual(self.log("stored")[0], 500)
        self.assertEqual(self.h.log_messages(), ["stored"])

    def test_delay(self):
        self.h.set_faults([{"action": "delay", "seconds": 0.4, "count": 1}])
        t0 = time.monotonic()
        self.assertEqual(self.log()[0], 204)
        self.assertGreaterEqual(time.monotonic() - t0, 0.38)
        t0 = time.monotonic()
        self.assertEqual(self.log()[0], 204)
        self.assertLess(time.monotonic() - t0, 0.3)
        self.h.set_faults([{"action": "status", "status": 503, "delay": 0.3, "count": 1}])
        t0 = time.monotonic()
        self.assertEqual(self.log()[0], 503)
        self.assertGreaterEqual(time.monotonic() - t0, 0.28)

    def test_cut_stores_but_does_not_answer(self):
        self.h.set_faults([{"action": "cut", "count": 1, "path": "/scripts/"}])
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError,
                                http.client.BadStatusLine)):
            self.log("maybe")
        self.assertEqual(self.log("after")[0], 204)
        self.assertEqual(self.h.log_messages(), ["maybe", "after"])
        self.h.set_faults([{"action": "cut", "count": 1, "store": False}])
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
            self.log("lost")
        self.assertEqual(self.h.log_messages(), ["maybe", "after"])

    def assert_refused(self, port):
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def test_refuse_then_reopen_same_port(self):
        port = self.h.api_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)   # an idle keep-alive one
        conn.request("GET", "/_sim/state")
        conn.getresponse().read()
        self.h.set_faults([{"action": "refuse", "seconds": 1.0, "count": 1}])
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
            self.log()
        time.sleep(0.2)
        self.assert_refused(port)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                                ConnectionRefusedError)):
            conn.request("GET", "/_sim/state")
            conn.getresponse().read()
        conn.close()
        self.assertEqual(self.h.state()["logs"], 0, "control API reachable on the storage port")
        time.sleep(1.1)
        self.assertEqual(self.log()[0], 204)
        # the immediate form, on the storage side
        self.h.refuse("storage", 0.6, after=0)
        time.sleep(0.2)
        self.assert_refused(self.h.storage_port)
        time.sleep(0.7)
        socket.create_connection(("127.0.0.1", self.h.storage_port), timeout=2).close()

    def test_malformed(self):
        self.h.set_faults([{"action": "malformed", "kind": "html502", "count": 1}])
        st, hdrs, body = self.h.api("POST", "files/", {"name": "a"})
        self.assertEqual(st, 502)
        self.assertIn("text/html", hdrs["content-type"])
        self.assertIn(b"<html>", body)
        self.assertEqual(self.h.files(), [], "html502 does not act")
        self.h.set_faults([{"action": "malformed", "kind": "truncated", "count": 1}])
        st, _, body = self.h.api("POST", "files/", {"name": "a"})
        self.assertEqual(st, 201)
        with self.assertRaises(ValueError):
            json.loads(body)
        self.h.set_faults([{"action": "malformed", "kind": "empty200", "count": 1}])
        st, hdrs, body = self.h.api("POST", "files/", {"name": "a"})
        self.assertEqual((st, body, hdrs["content-length"]), (200, b"", "0"))
        self.h.set_faults([{"action": "malformed", "kind": "garbage", "count": 1}])
        st, _, body = self.h.api("POST", "files/", {"name": "a"})
        self.assertEqual(st, 201)
        g = json.loads(body)
        self.assertIsInstance(g["uploadFields"], list)
        self.assertTrue(contract().validate_response("POST", "/files/", 201, body))
        self.h.set_faults([{"action": "malformed", "kind": "nonjson", "count": 1}])
        st, _, body = self.h.api("GET", self.h.run_path())
        self.assertEqual(st, 200)
        self.assertTrue(body.startswith(b"\x00"))
        self.assertEqual(len(self.h.files()), 3, "truncated/empty200/garbage answers still acted")

    def test_hostile_huge_length(self):
        self.h.set_faults([{"action": "hostile", "kind": "huge_length", "count": 1}])
        conn = http.client.HTTPConnection("127.0.0.1", self.h.api_port, timeout=10)
        conn.request("GET", "/" + self.h.run_path(), headers={"Authorization": "Basic " + base64.b64encode(
            (self.h.api_key + ":").encode()).decode()})
        r = conn.getresponse()
        self.assertEqual(int(r.getheader("Content-Length")), 10 << 30)
        with self.assertRaises(http.client.IncompleteRead):
            r.read()
        conn.close()

    def test_hostile_endless(self):
        self.h.set_faults([{"action": "hostile", "kind": "endless", "count": 1, "seconds": 20}])
        conn = http.client.HTTPConnection("127.0.0.1", self.h.api_port, timeout=10)
        conn.request("GET", "/" + self.h.run_path(), headers={"Authorization": "Basic " + base64.b64encode(
            (self.h.api_key + ":").encode()).decode()})
        r = conn.getresponse()
        self.assertIsNone(r.getheader("Content-Length"))
        got = 0
        while got < 8 * MiB:
            got += len(r.read(MiB))
        conn.close()
        self.assertEqual(self.h.api("GET", self.h.run_path())[0], 200, "still serving")

    def test_hostile_deep_json_retry_after_redirect(self):
        self.h.set_faults([{"action": "hostile", "kind": "deep_json", "count": 1}])
        st, _, body = self.h.api("GET", self.h.run_path())
        self.assertEqual((st, len(body)), (200, 200000))
        self.assertTrue(body.startswith(b"[[[[") and body.endswith(b"]]]]"))
        self.h.set_faults([{"action": "hostile", "kind": "huge_retry_after", "count": 1}])
        st, hdrs, _ = self.log()
        self.assertEqual((st, hdrs["retry-after"]), (503, "999999999"))
        self.h.set_faults([{"action": "hostile", "kind": "redirect", "count": 1}])
        st, hdrs, _ = self.log()
        self.assertEqual(st, 302)
        self.assertTrue(hdrs["location"].startswith("http://127.0.0.1:%d/" % self.h.storage_port))
        # an agent that follows it with its key is caught by the storage side
        port, path = url_port_path(hdrs["location"])
        st, _, _ = raw_request(port, "POST", path, b"{}", {"Authorization": "Basic eDo=",
                                                            "Content-Length": "2"})
        self.assertEqual(st, 400)
        self.assertEqual([v["kind"] for v in self.h.violations()], ["authorization_to_storage"])
        self.assertEqual(self.h.log_messages(), [])

    def test_hostile_upload_url_to_api(self):
        self.h.set_faults([{"action": "hostile", "kind": "upload_url_to_api", "path": "/files"}])
        _, _, data = self.h.api("POST", "files/", {"name": "u.bin"})
        fp = json.loads(data)
        port, _ = url_port_path(fp["uploadUrl"])
        self.assertEqual(port, self.h.api_port)
        st, _, body = SimCase.form_upload(self, fp, b"payload")
        self.assertEqual(st, 201, body)
        st, _, _ = SimCase.form_upload(self, fp, b"payload", headers={"Authorization": "Basic eDo="})
        self.assertEqual(st, 400)
        self.assertEqual([v["kind"] for v in self.h.violations()], ["authorization_to_storage"])
        _, _, data = self.h.api("POST", "files/multipart", {"name": "m.bin", "numParts": 1})
        mp = json.loads(data)
        self.assertEqual(url_port_path(mp["uploadUrls"][0])[0], self.h.api_port)
        port, path = url_port_path(mp["uploadUrls"][0])
        self.assertEqual(raw_request(port, "PUT", path, b"abc")[0], 200)

    def test_storage_faults(self):
        _, _, data = self.h.api("POST", "files/multipart", {"name": "p.bin", "numParts": 3})
        mp = json.loads(data)
        self.h.set_faults([{"server": "storage", "part": 2, "count": 1, "action": "status", "status": 500}])
        res = []
        for u in mp["uploadUrls"] + [mp["uploadUrls"][1]]:
            port, path = url_port_path(u)
            st, _, body = raw_request(port, "PUT", path, b"z" * 100)
            res.append(st)
        self.assertEqual(res, [200, 500, 200, 200])
        fp = json.loads(self.h.api("POST", "files/", {"name": "f.bin"})[2])
        self.h.set_faults([{"server": "storage", "method": "POST", "count": 1, "action": "status",
                            "status": 503}])
        st, hdrs, body = SimCase.form_upload(self, fp, b"q" * 1000)
        self.assertEqual(st, 503)
        self.assertIn(b"<Code>SlowDown</Code>", body)
        self.assertEqual(SimCase.form_upload(self, fp, b"q" * 1000)[0], 201)
        self.h.set_faults([{"server": "storage", "count": 1, "action": "status", "status": 403,
                            "code": "ExpiredToken", "message": "The provided token has expired."}])
        st, _, body = SimCase.form_upload(self, fp, b"q")
        self.assertEqual(st, 403)
        self.assertIn(b"<Code>ExpiredToken</Code>", body)
        self.h.set_faults([{"server": "storage", "count": 1, "action": "cut"}])
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
            SimCase.form_upload(self, fp, b"cut but stored")
        self.assertEqual(self.h.file_data(fp["id"]), b"cut but stored")

    def test_bad_plans_rejected(self):
        for bad in ([{"action": "explode"}], [{"action": "status"}], [{"action": "status", "status": 5,
                                                                       "count": -1}],
                    [{"action": "malformed", "kind": "x"}], [{"action": "delay", "typo": 1}]):
            with self.assertRaises(harness.SimError):
                self.h.set_faults(bad)

    def test_faults_never_touch_control_api(self):
        self.h.set_faults([{"action": "status", "status": 500, "server": "any"}])
        self.assertEqual(self.h.state()["logs"], 0)


AGENT_UA = {"User-Agent": "civis-agent/1.2.3"}
USER_UA = {"User-Agent": "civis-python/2.4.0"}


def rate_headers(hdrs):
    return {k: v for k, v in hdrs.items() if k.startswith("x-ratelimit-") or k == "retry-after"}


class TestRateLimit(SimCase):
    """--rate-limit 5 --rate-window 2: a sliding window per API key."""
    sim_args = ("--rate-limit", "5", "--rate-window", "2")

    def hb(self, headers=AGENT_UA, **kw):
        return self.h.api("POST", self.h.run_path("/heartbeats"), headers=headers, **kw)

    def test_headers_429_and_retry_after(self):
        got = [rate_headers(self.hb()[1]) for _ in range(5)]
        self.assertEqual(got, [{"x-ratelimit-limit": "5", "x-ratelimit-remaining": str(n)}
                               for n in (4, 3, 2, 1, 0)])
        t_full = time.monotonic()
        st, hdrs, body = self.hb()
        self.assertEqual(st, 429)
        self.assertEqual((hdrs["x-ratelimit-limit"], hdrs["x-ratelimit-remaining"]), ("5", "0"))
        ra = int(hdrs["retry-after"])
        self.assertTrue(1 <= ra <= 2, ra)
        self.assertEqual(json.loads(body)["code"], 429)
        self.assertEqual(len(self.h.heartbeats()), 5, "a 429 stores nothing")
        # every kind of answer carries the headers: a 404, a 201, a 400
        time.sleep(max(0.0, t_full + ra - time.monotonic()) + 0.05)
        st, hdrs, _ = self.h.api("GET", "files/999999")
        self.assertEqual((st, hdrs.get("x-ratelimit-limit")), (404, "5"))
        st, hdrs, _ = self.h.api("POST", "files/", {"name": "r.csv"})
        self.assertEqual((st, hdrs.get("x-ratelimit-remaining") is not None), (201, True))
        st, hdrs, _ = self.h.api("POST", "files/", {"nom": "x"})
        self.assertEqual((st, hdrs.get("x-ratelimit-limit")), (400, "5"))
        # the control API, the storage side and requests without a valid key do not count
        self.h.state()
        self.assertEqual(self.h.api("GET", self.h.run_path(), auth=False)[0], 401)
        self.assertNotIn("x-ratelimit-limit", self.h.api("GET", self.h.run_path(), auth=False)[1])
        rep = self.h.ratelimit()
        self.assertEqual(rep["clients"]["agent"]["limited"], 1)
        self.assertEqual(sum(k["used"] for k in rep["keys"].values()), 3, rep)
        self.assertNotIn(self.h.api_key, json.dumps(rep))

    def test_agent_and_user_share_the_key(self):
        for _ in range(3):
            self.assertEqual(self.hb(AGENT_UA)[0], 204)
        got = [self.hb(USER_UA)[0] for _ in range(4)]
        self.assertEqual(got, [204, 204, 429, 429])
        self.assertEqual(self.hb(AGENT_UA)[0], 429)
        rep = self.h.ratelimit()
        self.assertEqual((rep["limit"], rep["window"]), (5, 2.0))
        a, u = rep["clients"]["agent"], rep["clients"]["user"]
        self.assertEqual((a["requests"], a["limited"], a["maxInWindow"]), (4, 1, 3))
        self.assertEqual((u["requests"], u["limited"], u["maxInWindow"]), (4, 2, 2))
        self.assertEqual(a["userAgents"], ["civis-agent/1.2.3"])
        self.assertEqual(u["windows"], [{"index": 0, "start": 0.0, "requests": 4, "limited": 2}])
        self.assertEqual([r["client"] for r in self.h.requests()], ["agent"] * 3 + ["user"] * 4 + ["agent"])
        self.assertEqual([r.get("rateLimited", False) for r in self.h.requests()][-3:], [True, True, True])
        # the next fixed window counts afresh; the sliding window frees slots as they age
        time.sleep(2.1)
        self.assertEqual(self.hb(USER_UA)[0], 204)
        w = self.h.ratelimit()["clients"]["user"]["windows"]
        self.assertEqual([(x["index"], x["requests"], x["limited"]) for x in w], [(0, 4, 2), (1, 1, 0)])

    def test_settings_at_run_time(self):
        self.assertEqual(self.h.config()["rateLimit"], 5)
        self.h.set_config(rateLimit=2, rateWindow=1)
        self.assertEqual([self.hb()[0] for _ in range(3)], [204, 204, 429])
        self.assertEqual(self.h.ratelimit()["clients"]["agent"]["requests"], 3, "new limit, new counts")
        time.sleep(1.05)
        self.assertEqual(self.hb()[0], 204)
        self.h.set_config(rateLimit=0)
        st, hdrs, _ = self.hb()
        self.assertEqual((st, rate_headers(hdrs)), (204, {}), "no limit, no headers")
        self.assertEqual(self.h.ratelimit()["clients"]["agent"]["requests"], 1, "still counted")
        for bad in ({"rateLimit": -1}, {"rateWindow": 0}, {"rateLimit": "5"}, {"bogus": 1}):
            with self.assertRaises(harness.SimError):
                self.h.control("POST", "config", bad)
        self.h.reset()
        self.assertEqual((self.h.config()["rateLimit"], self.h.config()["rateWindow"]), (5, 2.0),
                         "reset restores the command line's settings")


class TestMissingEndpoints(SimCase):
    """--heartbeats-missing 404: today's public API has no heartbeat endpoint."""
    sim_args = ("--heartbeats-missing", "404")

    def test_heartbeats_missing_and_selectable(self):
        st, _, body = self.h.api("POST", self.h.run_path("/heartbeats"))
        self.assertEqual((st, json.loads(body)["code"]), (404, 404))
        self.assertEqual(self.h.heartbeats(), [])
        self.assertEqual(self.h.config()["heartbeatStatus"], 404)
        for code in (405, 410):
            self.h.set_config(heartbeatStatus=code)
            st, _, body = self.h.api("POST", self.h.run_path("/heartbeats"))
            self.assertEqual((st, json.loads(body)["code"]), (code, code))
        self.assertEqual(self.h.state()["heartbeatsRefused"], 3)
        self.assertEqual(self.h.wait_for(timeout=1, heartbeatsRefused=3)["heartbeatsRefused"], 3)
        self.assertEqual(len(self.h.requests(path="/" + self.h.run_path("/heartbeats"))), 3)
        self.h.set_config(heartbeatStatus=None)
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 204)
        self.assertEqual(len(self.h.heartbeats()), 1)
        with self.assertRaises(harness.SimError):
            self.h.set_config(heartbeatStatus=500)
        # the rest of the API works as ever
        self.assertEqual(self.h.api("POST", self.h.run_path("/logs"), {"message": "x"})[0], 204)
        self.h.reset()
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 404, "back to the flag")

    def test_run_patch_recorded_and_missing(self):
        p = self.h.run_path()
        self.assertEqual(self.h.api("PATCH", p, {"bocceAcceptedAt": "2026-12-01T21:00:00.123Z"})[0], 204)
        self.assertEqual(self.h.api("PATCH", p, {"bocceStartedAt": "2026-12-01T21:00:01Z"})[0], 204)
        self.assertEqual(self.h.api("PATCH", p, {"state": "nope"})[0], 400)
        self.assertEqual(self.h.api("PATCH", p, {"state": "failed"})[0], 204)
        self.h.set_config(runPatchStatus=410)
        self.assertEqual(self.h.api("PATCH", p, {"state": "succeeded"})[0], 410)
        pt = self.h.patches()
        self.assertEqual([(x["body"], x["status"]) for x in pt], [
            ({"bocceAcceptedAt": "2026-12-01T21:00:00.123Z"}, 204),
            ({"bocceStartedAt": "2026-12-01T21:00:01Z"}, 204),
            ({"state": "nope"}, 400), ({"state": "failed"}, 204), ({"state": "succeeded"}, 410)])
        self.assertEqual((pt[0]["jobId"], pt[0]["runId"]), (self.h.job_id, self.h.run_id))
        self.assertEqual(json.loads(self.h.api("GET", p)[2])["state"], "failed", "a refused PATCH acts not")
        self.assertEqual(self.h.state()["patches"], 5)
        for code in (404, 405):
            self.h.set_config(runPatchStatus=code)
            self.assertEqual(self.h.api("PATCH", p, {"state": "running"})[0], code)


class TestLatency(SimCase):
    """--delay-ms 300 --storage-delay-ms 300: each answer waits, none waits for another."""
    sim_args = ("--delay-ms", "300", "--storage-delay-ms", "300")

    def parallel(self, fn, n):
        out = [None] * n
        ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out, time.monotonic() - t0

    def test_every_answer_waits(self):
        t0 = time.monotonic()
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 204)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        t0 = time.monotonic()
        self.assertEqual(self.h.api("GET", "files/999999")[0], 404)
        self.assertEqual(self.h.api("GET", self.h.run_path(), auth=False)[0], 401)
        self.assertGreaterEqual(time.monotonic() - t0, 0.58, "errors wait too")
        t0 = time.monotonic()
        self.h.state()
        self.assertLess(time.monotonic() - t0, 0.25, "the control API does not wait")
        fp = json.loads(self.h.api("POST", "files/", {"name": "d.bin"})[2])
        t0 = time.monotonic()
        self.assertEqual(SimCase.form_upload(self, fp, b"data")[0], 201)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29, "storage answers wait")
        self.h.set_config(delayMs=0, storageDelayMs=0)
        t0 = time.monotonic()
        self.h.api("POST", self.h.run_path("/heartbeats"))
        self.assertLess(time.monotonic() - t0, 0.25)

    def test_requests_in_flight_each_wait_their_own(self):
        n = 40
        got, wall = self.parallel(lambda i: self.h.api("POST", self.h.run_path("/logs"),
                                                       {"message": "m%d" % i})[0], n)
        self.assertEqual(got, [204] * n)
        # serialized it would take n * 0.3 = 12 s; the loaded machine gets slack
        self.assertLess(wall, 3.0, "%d requests in flight took %.2f s" % (n, wall))
        self.assertEqual(self.h.state()["logs"], n)
        mp = json.loads(self.h.api("POST", "files/multipart", {"name": "p.bin", "numParts": 8})[2])

        def put(i):
            port, path = url_port_path(mp["uploadUrls"][i])
            return raw_request(port, "PUT", path, b"p" * 1000)[0]
        got, wall = self.parallel(put, 8)
        self.assertEqual(got, [200] * 8)
        self.assertLess(wall, 2.0, "8 part PUTs in flight took %.2f s" % wall)


class TestHarness(unittest.TestCase):

    def test_contract_in_tree_by_default(self):
        saved = os.environ.pop("CIVIS_CONTRACT", None)
        try:
            self.assertEqual(harness.contract_path(), harness.CONTRACT_IN_TREE)
            self.assertTrue(os.path.isfile(harness.CONTRACT_IN_TREE))
            os.environ["CIVIS_CONTRACT"] = "/elsewhere/c.json"
            self.assertEqual(harness.contract_path(), "/elsewhere/c.json")
            self.assertIn("/elsewhere/c.json", harness.prism_missing() or "")
        finally:
            os.environ.pop("CIVIS_CONTRACT", None)
            if saved is not None:
                os.environ["CIVIS_CONTRACT"] = saved

    def test_no_prism_is_an_error_saying_what_to_run(self):
        saved = os.environ.get("PRISM")
        os.environ["PRISM"] = "/nonexistent/prism"
        try:
            self.assertIn("make prism", harness.prism_missing())
            h = SimHarness(use_prism=True)
            with self.assertRaises(harness.SimError) as cm:
                h.start()
            self.assertIn("make prism", str(cm.exception))
            h.stop()
        finally:
            if saved is None:
                os.environ.pop("PRISM", None)
            else:
                os.environ["PRISM"] = saved


class TestFlood(SimCase):
    """How fast the simulator stores log lines: SIM_FLOOD_LINES lines (default 1,000,000,
    ~170 B of JSON each) in batches of 500 over 2 keep-alive connections."""

    def test_flood(self):
        total = int(os.environ.get("SIM_FLOOD_LINES", "1000000"))
        per = 500
        batches = []
        for b in range(8):
            msgs = [{"message": "line %07d of the flood, with some padding text: %s" % (i, "x" * 60),
                     "level": "info", "createdAt": "2026-11-27T17:00:%02d.%09dZ" % (b, i)}
                    for i in range(per)]
            batches.append(json.dumps({"messages": msgs}).encode())
        nreq = total // per
        auth = {"Authorization": "Basic " + base64.b64encode((self.h.api_key + ":").encode()).decode(),
                "Content-Type": "application/json"}
        path = "/" + self.h.run_path("/logs")
        errors = []

        def worker(k):
            conn = http.client.HTTPConnection("127.0.0.1", self.h.api_port, timeout=60)
            for i in range(k, nreq, 2):
                conn.request("POST", path, body=batches[i % len(batches)], headers=auth)
                r = conn.getresponse()
                r.read()
                if r.status != 204:
                    errors.append(r.status)
            conn.close()
        t0 = time.monotonic()
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.monotonic() - t0
        self.assertEqual(errors, [])
        n = self.h.state()["logs"]
        self.assertEqual(n, nreq * per)
        mb = sum(len(batches[i % len(batches)]) for i in range(nreq)) / 1e6
        sys.stderr.write("\n  flood: %d lines (%.0f MB JSON, %d requests) stored in %.2f s: "
                         "%.0f lines/s, %.0f MB/s\n" % (n, mb, nreq, dt, n / dt, mb / dt))


class TestPrism(SimCase):
    """Prism in front: real requests pass, bad requests get 422, bad answers 500.
    No Prism is a failure, not a skip: `make sim-test` installs it first."""
    use_prism = True

    def test_every_endpoint_passes_validation(self):
        h = self.h
        self.call("POST", h.run_path("/logs"), {"messages": [
            {"message": "hi", "level": "info", "createdAt": "2026-11-27T17:00:00.123456789Z"}]}, 204)
        self.call("POST", h.run_path("/logs"), {"message": "single", "level": "info"}, 204)
        self.call("GET", h.run_path("/logs"), status=200)
        self.call("GET", h.run_path("/logs?last_id=1&limit=10"), status=200)
        self.call("POST", h.run_path("/heartbeats"), status=204)
        self.call("GET", h.run_path(), status=200)
        self.call("GET", "scripts/containers/%d/runs" % h.job_id, status=200)
        self.call("PATCH", h.run_path(), {"state": "running", "bocceStartedAt": "2026-11-27T17:00:00Z"}, 204)
        self.call("DELETE", h.run_path(), status=202)
        fp = json.loads(self.call("POST", "files/", {"name": "a.csv",
                                                     "expiresAt": "2030-01-01T00:00:00Z"}, 201)[2])
        self.assertEqual(self.form_upload(fp, b"a,b\n1,2\n")[0], 201)
        self.call("GET", "files/%d" % fp["id"], status=200)
        mp = json.loads(self.call("POST", "files/multipart", {"name": "b.bin", "numParts": 1}, 201)[2])
        port, path = url_port_path(mp["uploadUrls"][0])
        self.assertEqual(raw_request(port, "PUT", path, b"part")[0], 200)
        self.call("POST", "files/multipart/%d/complete" % mp["id"], status=204)
        self.call("POST", h.run_path("/outputs"), {"objectType": "File", "objectId": fp["id"]}, 202)
        jv = json.loads(self.call("POST", "json_values/", {"name": "outputs",
                                                            "valueStr": '{"n": 1}'}, 201)[2])
        self.call("POST", "json_values/", {"valueStr": "[1, 2]"}, 201)
        self.call("GET", "json_values/%d" % jv["id"], status=200)
        for t, i in (("JSONValue", jv["id"]), ("Table", 3), ("Report", 4), ("Project", 5),
                     ("Credential", 6)):
            self.call("POST", h.run_path("/outputs"), {"objectType": t, "objectId": i}, 202)
        self.call("GET", h.run_path("/outputs"), status=200)
        h.assert_no_prism_violations(self.mark)
        h.assert_no_violations()
        self.assertEqual(h.log_messages(), ["hi", "single"])

    def test_invalid_request_gets_422(self):
        st, _, body = self.h.api("POST", self.h.run_path("/logs"), {"messages": [{"level": "info"}]})
        self.assertEqual(st, 422)
        self.assertIn(b"required property 'message'", body)
        st, _, _ = self.h.api("POST", "files/multipart", {"name": "x", "num_parts": 2})
        self.assertEqual(st, 422, "the contract knows camelCase only; the simulator takes both")
        st, _, _ = self.h.api("POST", self.h.run_path("/outputs"), {"objectType": "File", "objectId": "7"})
        self.assertEqual(st, 422)
        st, _, body = self.h.api("POST", "json_values/", {"name": "no value"})
        self.assertEqual(st, 422)
        self.assertIn(b"valueStr", body)
        # a new file without its required name, and an expiry that is not a date-time
        st, _, body = self.h.api("POST", "files/", {"expiresAt": "2030-01-01T00:00:00Z"})
        self.assertEqual(st, 422)
        self.assertIn(b"name", body)
        st, _, body = self.h.api("POST", "files/", {"name": "a.csv", "expiresAt": 17})
        self.assertEqual(st, 422)
        self.assertIn(b"expiresAt", body)
        self.assertEqual(self.h.files(), [], "Prism stopped them before the simulator")
        self.assertEqual(self.h.state()["logs"], 0, "Prism stopped them before the simulator")
        self.assertTrue(self.h.prism_errors(self.mark))
        with self.assertRaises(AssertionError):
            self.h.assert_no_prism_violations(self.mark)

    def test_expires_at_null_passes(self):
        # "keep forever" as the API documents it: the in-tree contract accepts null
        _, _, data = self.call("POST", "files/", {"name": "keep.csv", "expiresAt": None}, 201)
        self.assertIsNone(json.loads(data)["expiresAt"])
        _, _, data = self.call("POST", "files/multipart", {"name": "keep.bin", "numParts": 1,
                                                           "expiresAt": None}, 201)
        self.assertIsNone(json.loads(data)["expiresAt"])
        self.assertEqual([f["expiresAt"] for f in self.h.files()], [None, None])
        self.h.assert_no_prism_violations(self.mark)

    def test_auth_behind_prism(self):
        st, _, _ = self.h.api("GET", self.h.run_path(), auth=False)
        self.assertEqual(st, 401, "Prism itself refuses a request without Authorization")
        st, hdrs, _ = self.h.api("GET", self.h.run_path(), auth=False,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"bad:").decode()})
        self.assertEqual(st, 401, "a wrong key reaches the simulator and its 401 comes back")
        self.assertIn("www-authenticate", hdrs)
        self.assertEqual([r["auth"] for r in self.h.requests()], ["basic-bad"])

    def test_bad_upstream_answer_gets_500(self):
        self.h.set_faults([{"action": "malformed", "kind": "garbage", "count": 1}])
        st, _, body = self.h.api("GET", self.h.run_path())
        self.assertEqual(st, 500)
        self.assertIn(b"VIOLATIONS", body)
        self.assertTrue(any("VIOLATIONS" in ln for ln in self.h.prism_errors(self.mark)))

    def test_error_statuses_pass_through(self):
        self.h.set_faults([{"action": "status", "status": 503, "retryAfter": "2", "count": 1}])
        st, hdrs, _ = self.h.api("POST", self.h.run_path("/heartbeats"))
        self.assertEqual((st, hdrs.get("retry-after")), (503, "2"))
        self.assertEqual(self.h.prism_errors(self.mark), [], "undocumented statuses are warnings only")
        self.assertTrue(self.h.prism_warnings(self.mark))

    def test_rate_limit_behind_prism(self):
        # headers pass through Prism both ways, the 429 validates (the contract
        # lists it), and Prism forwards User-Agent so clients are told apart
        self.h.set_config(rateLimit=2, rateWindow=60)
        st, hdrs, _ = self.h.api("POST", self.h.run_path("/heartbeats"), headers=AGENT_UA)
        self.assertEqual((st, rate_headers(hdrs)), (204, {"x-ratelimit-limit": "2",
                                                          "x-ratelimit-remaining": "1"}))
        st, hdrs, _ = self.call("GET", self.h.run_path(), status=200, headers=USER_UA)
        self.assertEqual(hdrs["x-ratelimit-remaining"], "0")
        st, hdrs, body = self.h.api("POST", "files/", {"name": "x.csv"}, headers=USER_UA)
        self.assertEqual(st, 429, body)
        self.assertEqual(rate_headers(hdrs), {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0",
                                              "retry-after": hdrs["retry-after"]})
        self.assertTrue(1 <= int(hdrs["retry-after"]) <= 60)
        self.assertNotIn("sl-violations", hdrs, "a 429 is in the contract")
        self.h.assert_no_prism_violations(self.mark)
        self.assertEqual(self.h.prism_warnings(self.mark), [])
        c = self.h.ratelimit()["clients"]
        self.assertEqual((c["agent"]["requests"], c["user"]["requests"], c["user"]["limited"]), (1, 2, 1))
        # a 429 whose body breaks the contract is caught
        self.h.set_config(rateLimit=0)
        self.h.set_faults([{"action": "status", "status": 429, "body": {"nope": 1}, "count": 1}])
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 500)

    def test_missing_endpoints_behind_prism(self):
        # a 404/405/410 from a deployment without the call passes Prism as a warning
        for code in (404, 405, 410):
            self.h.set_config(heartbeatStatus=code, runPatchStatus=code)
            self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], code)
            self.assertEqual(self.h.api("PATCH", self.h.run_path(), {"state": "running"})[0], code)
        self.assertEqual(self.h.prism_errors(self.mark), [])
        self.assertEqual([p["status"] for p in self.h.patches()], [404, 405, 410])

    def test_latency_behind_prism(self):
        self.h.set_config(delayMs=300)
        out = []
        ts = [threading.Thread(target=lambda: out.append(self.h.api(
            "POST", self.h.run_path("/heartbeats"))[0])) for _ in range(20)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.monotonic() - t0
        self.assertEqual(out, [204] * 20)
        self.assertTrue(0.29 <= wall < 3.0, "20 requests through Prism in flight took %.2f s" % wall)

    def test_cut_and_refuse_behind_prism(self):
        # Prism turns a cut upstream connection into an answer of its own: record what it is
        self.h.set_faults([{"action": "cut", "count": 1}])
        st, _, body = self.h.api("POST", self.h.run_path("/heartbeats"))
        self.assertGreaterEqual(st, 500, body)
        self.assertEqual(len(self.h.heartbeats()), 1, "stored although the answer was lost")
        self.h.set_faults([{"action": "refuse", "count": 1, "seconds": 1.0}])
        self.h.api("POST", self.h.run_path("/heartbeats"))
        time.sleep(0.2)
        st, _, body = self.h.api("POST", self.h.run_path("/heartbeats"))
        self.assertGreaterEqual(st, 500, body)
        time.sleep(1.0)
        self.assertEqual(self.h.api("POST", self.h.run_path("/heartbeats"))[0], 204)


def main():
    argv = [a for a in sys.argv[1:] if a not in ("-v", "--verbose")]
    verbosity = 2 if len(argv) != len(sys.argv) - 1 else 1
    loader = unittest.TestLoader()
    if argv:
        suite = loader.loadTestsFromNames(argv, sys.modules[__name__])
    else:
        suite = loader.loadTestsFromModule(sys.modules[__name__])
    runner = unittest.TextTestRunner(verbosity=verbosity)
    res = runner.run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - failed - len(res.skipped)
    print("%d passed, %d failed%s" % (passed, failed,
                                      ", %d skipped" % len(res.skipped) if res.skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
