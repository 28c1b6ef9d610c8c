/* jobapi_proto.c: parse and format the job API's request and reply lines.
 * Everything read here comes from a process of the job: every field is
 * checked for type and size before it is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cJSON.h>

#include "civis/civis.h"
#include "jobapi_proto.h"

static const char *const object_types[] = {
	"File", "Table", "Report", "Project", "Credential", "JSONValue",
};

const char *
agent_jobapi_object_type(const char *word)
{
	if (word == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(object_types) / sizeof(object_types[0]); i++)
		if (strcasecmp(word, object_types[i]) == 0)
			return object_types[i];
	if (strcasecmp(word, "json") == 0 || strcasecmp(word, "json_value") == 0 ||
	    strcasecmp(word, "jsonvalue") == 0)
		return "JSONValue";
	return NULL;
}

static void
seterr(char *err, size_t errlen, const char *text)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", text);
}

/* A string member, required or not; *out is a malloc'd copy. */
static int
get_string(const cJSON *root, const char *key, int required, size_t max, char **out,
           char *err, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
	size_t n;

	*out = NULL;
	if (it == NULL || cJSON_IsNull(it)) {
		if (!required)
			return CIVIS_OK;
		snprintf(err, errlen, "request has no \"%s\"", key);
		return CIVIS_EINVAL;
	}
	if (!cJSON_IsString(it) || it->valuestring == NULL) {
		snprintf(err, errlen, "\"%s\" must be a string", key);
		return CIVIS_EINVAL;
	}
	n = strlen(it->valuestring);
	if (n == 0) {
		snprintf(err, errlen, "\"%s\" is empty", key);
		return CIVIS_EINVAL;
	}
	if (n > max) {
		snprintf(err, errlen, "\"%s\" is %zu bytes; at most %zu", key, n, max);
		return CIVIS_ETOOBIG;
	}
	*out = strdup(it->valuestring);
	if (*out == NULL) {
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	return CIVIS_OK;
}

static int
parse_mask(const cJSON *root, agent_jobapi_req *r, char *err, size_t errlen)
{
	int rc = get_string(root, "value", 1, AGENT_JOBAPI_MAX_SECRET, &r->value, err, errlen);

	if (rc == CIVIS_OK)
		r->value_len = strlen(r->value);
	return rc;
}

static int
parse_upload(const cJSON *root, agent_jobapi_req *r, char *err, size_t errlen)
{
	const cJSON *gz = cJSON_GetObjectItemCaseSensitive(root, "gzip");
	int rc;

	rc = get_string(root, "path", 1, AGENT_JOBAPI_MAX_PATH, &r->path, err, errlen);
	if (rc != CIVIS_OK)
		return rc;
	if (r->path[0] != '/') {
		seterr(err, errlen, "\"path\" must be absolute");
		return CIVIS_EINVAL;
	}
	rc = get_string(root, "name", 0, AGENT_JOBAPI_MAX_NAME, &r->name, err, errlen);
	if (rc != CIVIS_OK)
		return rc;
	if (gz != NULL && !cJSON_IsBool(gz) && !cJSON_IsNull(gz)) {
		seterr(err, errlen, "\"gzip\" must be true or false");
		return CIVIS_EINVAL;
	}
	r->gzip = gz != NULL && cJSON_IsTrue(gz);
	return CIVIS_OK;
}

static int
parse_output(const cJSON *root, agent_jobapi_req *r, char *err, size_t errlen)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
	const char *type;

	if (!cJSON_IsString(t) || (type = agent_jobapi_object_type(t->valuestring)) == NULL) {
		seterr(err, errlen, "\"type\" must be one of File, Table, Report, Project, "
		       "Credential, JSONValue");
		return CIVIS_EINVAL;
	}
	/* Ids are integers; a double can hold every id up to 2^53 exactly. */
	if (!cJSON_IsNumber(id) || id->valuedouble < 1 || id->valuedouble > 9007199254740992.0 ||
	    id->valuedouble != (double)(int64_t)id->valuedouble) {
		seterr(err, errlen, "\"id\" must be a positive integer");
		return CIVIS_EINVAL;
	}
	snprintf(r->type, sizeof(r->type), "%s", type);
	r->id = (int64_t)id->valuedouble;
	return CIVIS_OK;
}

static int
parse_json(const cJSON *root, agent_jobapi_req *r, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "value");
	int rc = get_string(root, "name", 1, AGENT_JOBAPI_MAX_NAME, &r->name, err, errlen);

	if (rc != CIVIS_OK)
		return rc;
	if (v == NULL) {
		seterr(err, errlen, "request has no \"value\"");
		return CIVIS_EINVAL;
	}
	r->value = cJSON_PrintUnformatted(v);
	if (r->value == NULL) {
		seterr(err, errlen, "out of memory");
		return CIVIS_ENOMEM;
	}
	r->value_len = strlen(r->value);
	if (r->value_len > AGENT_JOBAPI_MAX_JSON) {
		snprintf(err, errlen, "the JSON value is %zu bytes; the API takes at most %u",
		         r->value_len, AGENT_JOBAPI_MAX_JSON);
		return CIVIS_ETOOBIG;
	}
	return CIVIS_OK;
}

int
agent_jobapi_parse_request(const char *line, size_t len, agent_jobapi_req *out,
                           char *err, size_t errlen)
{
	cJSON *root = NULL;
	const cJSON *op;
	int rc;

	memset(out, 0, sizeof(*out));
	seterr(err, errlen, "");
	if (len > AGENT_JOBAPI_MAX_REQUEST) {
		snprintf(err, errlen, "request is %zu bytes; at most %u", len, AGENT_JOBAPI_MAX_REQUEST);
		return CIVIS_ETOOBIG;
	}
	root = cJSON_ParseWithLength(line, len);
	if (root == NULL || !cJSON_IsObject(root)) {
		seterr(err, errlen, "request is not a JSON object");
		rc = CIVIS_EINVAL;
		goto out;
	}
	op = cJSON_GetObjectItemCaseSensitive(root, "op");
	if (!cJSON_IsString(op) || op->valuestring == NULL) {
		seterr(err, errlen, "request has no \"op\"");
		rc = CIVIS_EINVAL;
		goto out;
	}
	if (strcmp(op->valuestring, "mask") == 0) {
		out->op = AGENT_JOBAPI_MASK;
		rc = parse_mask(root, out, err, errlen);
	} else if (strcmp(op->valuestring, "upload") == 0) {
		out->op = AGENT_JOBAPI_UPLOAD;
		rc = parse_upload(root, out, err, errlen);
	} else if (strcmp(op->valuestring, "output") == 0) {
		out->op = AGENT_JOBAPI_OUTPUT;
		rc = parse_output(root, out, err, errlen);
	} else if (strcmp(op->valuestring, "json") == 0) {
		out->op = AGENT_JOBAPI_JSON;
		rc = parse_json(root, out, err, errlen);
	} else {
		seterr(err, errlen, "unknown \"op\" (mask, upload, output, json)");
		rc = CIVIS_EINVAL;
	}
out:
	cJSON_Delete(root);
	if (rc != CIVIS_OK)
		agent_jobapi_req_dispose(out);
	return rc;
}

void
agent_jobapi_req_dispose(agent_jobapi_req *r)
{
	if (r == NULL)
		return;
	if (r->op == AGENT_JOBAPI_JSON)
		cJSON_free(r->value);
	else
		free(r->value);
	free(r->path);
	free(r->name);
	memset(r, 0, sizeof(*r));
}

static int
add_str(cJSON *o, const char *k, const char *v)
{
	return v == NULL || cJSON_AddStringToObject(o, k, v) != NULL;
}

int
agent_jobapi_format_request(const agent_jobapi_req *r, char **out, size_t *outlen)
{
	static const char *const ops[] = { "", "mask", "upload", "output", "json" };
	cJSON *o = cJSON_CreateObject();
	char *text = NULL, *line = NULL;
	int rc = CIVIS_ENOMEM, ok;
	size_t n;

	*out = NULL;
	*outlen = 0;
	if (o == NULL)
		goto out;
	if (r->op < AGENT_JOBAPI_MASK || r->op > AGENT_JOBAPI_JSON) {
		rc = CIVIS_EINVAL;
		goto out;
	}
	ok = cJSON_AddStringToObject(o, "op", ops[r->op]) != NULL;
	switch (r->op) {
	case AGENT_JOBAPI_MASK:
		ok = ok && add_str(o, "value", r->value);
		break;
	case AGENT_JOBAPI_UPLOAD:
		ok = ok && add_str(o, "path", r->path) && add_str(o, "name", r->name) &&
		     cJSON_AddBoolToObject(o, "gzip", r->gzip) != NULL;
		break;
	case AGENT_JOBAPI_OUTPUT:
		ok = ok && add_str(o, "type", r->type) &&
		     cJSON_AddNumberToObject(o, "id", (double)r->id) != NULL;
		break;
	case AGENT_JOBAPI_JSON: {
		cJSON *v = r->value ? cJSON_ParseWithLength(r->value, r->value_len) : NULL;

		if (v == NULL) {
			rc = CIVIS_EINVAL;
			goto out;
		}
		ok = ok && add_str(o, "name", r->name);
		if (!ok || !cJSON_AddItemToObject(o, "value", v)) {
			cJSON_Delete(v);
			ok = 0;
		}
		break;
	}
	}
	if (!ok || (text = cJSON_PrintUnformatted(o)) == NULL)
		goto out;
	n = strlen(text);
	if (n > AGENT_JOBAPI_MAX_REQUEST) {
		rc = CIVIS_ETOOBIG;
		goto out;
	}
	if ((line = malloc(n + 2)) == NULL)
		goto out;
	memcpy(line, text, n);
	line[n] = '\n';
	line[n + 1] = '\0';
	*out = line;
	*outlen = n + 1;
	rc = CIVIS_OK;
out:
	cJSON_free(text);
	cJSON_Delete(o);
	return rc;
}

/* JSON string body of s (no quotes), cut to fit `room`, never mid-escape. */
static size_t
json_escape(char *dst, size_t room, const char *s)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char tmp[8];
		size_t k;

		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			k = 2;
		} else if (c < 0x20 || c == 0x7f) {
			k = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
		} else {
			tmp[0] = (char)c;
			k = 1;
		}
		if (o + k >= room)
			break;
		memcpy(dst + o, tmp, k);
		o += k;
	}
	dst[o] = '\0';
	return o;
}

size_t
agent_jobapi_format_reply(char *buf, size_t len, int status, int64_t id, const char *text)
{
	char esc[AGENT_JOBAPI_MAX_REPLY / 2];
	int n;

	if (len == 0)
		return 0;
	json_escape(esc, sizeof(esc), text ? text : "");
	if (status == CIVIS_OK) {
		char idpart[32] = "";

		if (id > 0)
			snprintf(idpart, sizeof(idpart), ",\"id\":%lld", (long long)id);
		n = snprintf(buf, len, "{\"ok\":true%s%s%s%s}\n", idpart,
		             text ? ",\"text\":\"" : "", text ? esc : "", text ? "\"" : "");
	} else {
		n = snprintf(buf, len, "{\"ok\":false,\"status\":%d,\"error\":\"%s\"}\n", status, esc);
	}
	if (n < 0 || (size_t)n >= len) {
		buf[0] = '\0';
		return 0;
	}
	return (size_t)n;
}

int
agent_jobapi_parse_reply(const char *line, size_t len, int *status, int64_t *id,
                         char *text, size_t textlen)
{
	cJSON *root;
	const cJSON *ok, *st, *idv, *tx;
	int rc = CIVIS_EPROTO;

	*status = CIVIS_EPROTO;
	*id = 0;
	seterr(text, textlen, "the agent's answer is not a reply");
	if (len > AGENT_JOBAPI_MAX_REPLY)
		return CIVIS_EPROTO;
	root = cJSON_ParseWithLength(line, len);
	if (root == NULL)
		return CIVIS_EPROTO;
	ok = cJSON_GetObjectItemCaseSensitive(root, "ok");
	if (!cJSON_IsBool(ok))
		goto out;
	tx = cJSON_GetObjectItemCaseSensitive(root, cJSON_IsTrue(ok) ? "text" : "error");
	seterr(text, textlen, cJSON_IsString(tx) && tx->valuestring ? tx->valuestring : "");
	if (cJSON_IsTrue(ok)) {
		idv = cJSON_GetObjectItemCaseSensitive(root, "id");
		if (cJSON_IsNumber(idv) && idv->valuedouble >= 1 && idv->valuedouble < 9.2e18)
			*id = (int64_t)idv->valuedouble;
		*status = CIVIS_OK;
	} else {
		st = cJSON_GetObjectItemCaseSensitive(root, "status");
		*status = cJSON_IsNumber(st) && st->valuedouble < 0 && st->valuedouble > -100
		          ? (int)st->valuedouble : CIVIS_EINVAL;
	}
	rc = CIVIS_OK;
out:
	cJSON_Delete(root);
	return rc;
}
