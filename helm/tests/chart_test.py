"""Checks of the kvtier Helm chart, with Helm's own engine and no cluster.

Renders helm/kvtier through helm-python-sdk (Helm 4 as a library: the same
template engine, sprig functions, values.schema.json check and linter as
the helm binary), validates every rendered object against the Kubernetes
API schemas of kubernetes-validate (the newest release it carries and the
chart's oldest, 1.27), checks the server config in the ConfigMap against
proto/kvtier/v1/config.proto (protoc --encode), and asserts what the chart
promises: stable node ids and advertise addresses, TLS and access mounts,
probes, the grace period, the schema's and the templates' refusals.

Run: .venv/bin/python helm/tests/chart_test.py  (scripts/lib.sh
ensure_chart_tools installs the packages). KVTIER_SERVER, when set, names a
kvtier-server that must start on a rendered single-node config.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "kvtier")
CONFIG_PROTO = os.path.join(ROOT, "proto", "kvtier", "v1", "config.proto")
RELEASE, NAMESPACE = "kv", "store"
FULLNAME = "kv-kvtier"
# The newest Kubernetes the validator carries, and the chart's kubeVersion floor.
KUBE_VERSIONS = (kubernetes_validate.latest_version(), "1.27.0")
# Kinds outside the Kubernetes API (the Prometheus Operator's CRD).
CUSTOM_KINDS = {"ServiceMonitor"}


def read(path):
    with open(path) as f:
        return f.read()


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


PRODUCTION = load_yaml(os.path.join(CHART, "values-production.yaml"))


def merged(base, override):
    """Helm's value merge: maps merge key by key, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render(values=None, chart_dir=CHART):
    """Every rendered object, by kind and name."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    objects = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def server_container(objects):
    sts = objects[("StatefulSet", FULLNAME)]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container


def config_text(objects):
    return objects[("ConfigMap", FULLNAME)]["data"]["server.txtpb"]


def config_fields(text):
    """The scalar fields of the text-format config: name -> list of values."""
    fields = {}
    for name, value in re.findall(r"^(\w+): (.+)$", text, re.M):
        fields.setdefault(name, []).append(yaml.safe_load(value))
    return fields


def encode_config(text):
    """protoc's text-format parser over config.proto: unknown fields and wrong
    types fail. metrics_listen is left out while config.proto lacks it."""
    with open(CONFIG_PROTO) as f:
        if "metrics_listen" not in f.read():
            print("note: config.proto has no metrics_listen yet; not checked", file=sys.stderr)
            text = re.sub(r"^metrics_listen: .*\n", "", text, flags=re.M)
    return subprocess.run(
        ["protoc", "--encode=kvtier.v1.ServerConfig", "-I", os.path.join(ROOT, "proto"),
         CONFIG_PROTO], input=text.encode(), capture_output=True)


class RenderedObjectsTest(unittest.TestCase):
    """Default and production values: lint, API schemas, config, wiring."""

    CASES = {
        "default": {},
        "production": PRODUCTION,
        "tls-without-client-certs": merged(PRODUCTION, {"tls": {"clientAuth": False}}),
        "bundled-etcd-3-members": {"etcd": {"replicaCount": 3}, "networkPolicy": {"enabled": True},
                                   "metrics": {"serviceMonitor": {"enabled": True}}},
        "one-node-no-etcd": {"replicaCount": 1, "server": {"replicas": 1},
                             "etcd": {"enabled": False}, "persistence": {"enabled": False}},
    }

    @classmethod
    def setUpClass(cls):
        cls.rendered = {case: render(values) for case, values in cls.CASES.items()}

    def test_lint_is_clean(self):
        for case, values in self.CASES.items():
            with self.subTest(case=case):
                report = helm.lint(CHART, values, strict=True, kube_version="v1.34.0")
                self.assertEqual(report["errors"], [])
                problems = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(problems, [])

    def test_every_object_is_valid_kubernetes(self):
        for case, objects in self.rendered.items():
            for (kind, name), obj in objects.items():
                if kind in CUSTOM_KINDS:
                    continue
                for version in KUBE_VERSIONS:
                    with self.subTest(case=case, kind=kind, name=name, version=version):
                        kubernetes_validate.validate(obj, version, strict=True)

    def test_expected_objects(self):
        kinds = lambda case: sorted(k for k, _ in self.rendered[case])
        self.assertEqual(kinds("default"), [
            "ConfigMap", "PodDisruptionBudget", "Service", "Service", "Service",
            "ServiceAccount", "StatefulSet", "StatefulSet"])
        self.assertEqual(kinds("production"), [
            "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service",
            "ServiceAccount", "ServiceMonitor", "StatefulSet"])

    def test_config_parses_as_server_config(self):
        for case, objects in self.rendered.items():
            with self.subTest(case=case):
                result = encode_config(config_text(objects))
                self.assertEqual(result.returncode, 0, result.stderr.decode())

    def test_nodes_are_named_by_their_pods(self):
        for case, objects in self.rendered.items():
            with self.subTest(case=case):
                sts = objects[("StatefulSet", FULLNAME)]
                headless = objects[("Service", FULLNAME + "-headless")]
                self.assertEqual(sts["spec"]["serviceName"], FULLNAME + "-headless")
                self.assertEqual(headless["spec"]["clusterIP"], "None")
                self.assertTrue(headless["spec"]["publishNotReadyAddresses"])
                container = server_container(objects)
                self.assertEqual(container["args"], [
                    "--config=/etc/kvtier/config/server.txtpb",
                    "--node_id=$(POD_NAME)",
                    "--advertise_address=$(POD_NAME).kv-kvtier-headless.store.svc.cluster.local:50051"])
                self.assertEqual(container["env"][0]["name"], "POD_NAME")
                self.assertEqual(container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
                                 "metadata.name")
                pod_labels = sts["spec"]["template"]["metadata"]["labels"]
                for service in (headless, objects[("Service", FULLNAME)]):
                    self.assertLessEqual(service["spec"]["selector"].items(), pod_labels.items())

    def test_data_dir_is_on_the_claimed_volume(self):
        sts = self.rendered["production"][("StatefulSet", FULLNAME)]
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "440Gi")
        self.assertEqual(claim["spec"]["storageClassName"], "local-nvme")
        mounts = {m["name"]: m["mountPath"] for m in server_container(self.rendered["production"])["volumeMounts"]}
        fields = config_fields(config_text(self.rendered["production"]))
        self.assertEqual(fields["data_dir"], [mounts["data"] + "/data"])
        # Without persistence the data lives in an emptyDir.
        one = self.rendered["one-node-no-etcd"][("StatefulSet", FULLNAME)]
        self.assertNotIn("volumeClaimTemplates", one["spec"])
        volumes = {v["name"]: v for v in one["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["data"]["emptyDir"], {})

    def test_grace_period_covers_the_drain(self):
        for case, objects in self.rendered.items():
            with self.subTest(case=case):
                fields = config_fields(config_text(objects))
                pod = objects[("StatefulSet", FULLNAME)]["spec"]["template"]["spec"]
                needed = fields["drain_timeout_s"][0] + 10 + fields["shutdown_demote_ms"][0] / 1000
                self.assertGreater(pod["terminationGracePeriodSeconds"], needed)

    def test_production_config(self):
        fields = config_fields(config_text(self.rendered["production"]))
        self.assertEqual(fields["tls_cert_file"], ["/etc/kvtier/tls/tls.crt"])
        self.assertEqual(fields["tls_key_file"], ["/etc/kvtier/tls/tls.key"])
        self.assertEqual(fields["tls_client_ca_file"], ["/etc/kvtier/tls/ca.crt"])
        self.assertEqual(fields["peer_tls_ca_file"], ["/etc/kvtier/tls/ca.crt"])
        self.assertEqual(fields["access_file"], ["/etc/kvtier/access/access.txt"])
        self.assertEqual(fields["peer_token_file"], ["/etc/kvtier/access/peer.token"])
        self.assertEqual(fields["allow_insecure"], [False])
        self.assertEqual(fields["etcd_endpoints"], PRODUCTION["etcd"]["endpoints"])
        self.assertEqual(fields["metrics_listen"], ["0.0.0.0:9464"])
        self.assertIn("ram { capacity_bytes: 34359738368 policy: \"s3fifo\" }",
                      config_text(self.rendered["production"]))
        pod = self.rendered["production"][("StatefulSet", FULLNAME)]["spec"]["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        self.assertEqual(secrets, {"tls": "kvtier-tls", "access": "kvtier-access"})
        mounts = {m["name"]: m for m in server_container(self.rendered["production"])["volumeMounts"]}
        self.assertEqual(mounts["tls"]["mountPath"], "/etc/kvtier/tls")
        self.assertTrue(mounts["tls"]["readOnly"])
        self.assertEqual(mounts["access"]["mountPath"], "/etc/kvtier/access")
        # External etcd: the chart runs none.
        self.assertNotIn(("StatefulSet", FULLNAME + "-etcd"), self.rendered["production"])

    def test_bundled_etcd(self):
        objects = self.rendered["bundled-etcd-3-members"]
        etcd = objects[("StatefulSet", FULLNAME + "-etcd")]
        self.assertEqual(etcd["spec"]["replicas"], 3)
        domain = "kv-kvtier-etcd-headless.store.svc.cluster.local"
        self.assertEqual(config_fields(config_text(objects))["etcd_endpoints"],
                         [f"kv-kvtier-etcd-{i}.{domain}:2379" for i in range(3)])
        (container,) = etcd["spec"]["template"]["spec"]["containers"]
        self.assertIn("--initial-cluster=" + ",".join(
            f"kv-kvtier-etcd-{i}=http://kv-kvtier-etcd-{i}.{domain}:2380" for i in range(3)),
            container["args"])
        self.assertNotIn("etcd_endpoints", config_fields(config_text(self.rendered["one-node-no-etcd"])))

    def test_probes(self):
        container = server_container(self.rendered["default"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            self.assertEqual(container[probe]["grpc"], {"port": 50051})
        # The kubelet's gRPC probe speaks plaintext only: with TLS the image's
        # checker runs, with the node's certificate when clients need one.
        mtls = server_container(self.rendered["production"])["readinessProbe"]["exec"]["command"]
        self.assertEqual(mtls, [
            "kvtier-health", "--target=127.0.0.1:50051", "--deadline_s=2",
            "--server_name=kv-kvtier.store.svc", "--tls_ca_file=/etc/kvtier/tls/ca.crt",
            "--tls_cert_file=/etc/kvtier/tls/tls.crt", "--tls_key_file=/etc/kvtier/tls/tls.key"])
        tls = server_container(self.rendered["tls-without-client-certs"])["livenessProbe"]["exec"]["command"]
        self.assertEqual(tls, mtls[:5])

    def test_metrics_port_and_service_monitor(self):
        objects = self.rendered["production"]
        ports = {p["name"]: p["containerPort"] for p in server_container(objects)["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "metrics": 9464})
        headless = objects[("Service", FULLNAME + "-headless")]
        self.assertIn({"name": "metrics", "port": 9464, "targetPort": "metrics"},
                      headless["spec"]["ports"])
        monitor = objects[("ServiceMonitor", FULLNAME)]
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], "metrics")
        # With an access file, Prometheus scrapes with a role=metrics line's credentials.
        self.assertEqual(monitor["spec"]["endpoints"][0]["basicAuth"],
                         {"username": {"name": "kvtier-metrics", "key": "username"},
                          "password": {"name": "kvtier-metrics", "key": "password"}})
        # It selects the headless Service alone (each pod scraped once).
        selected = [name for (kind, name), obj in objects.items() if kind == "Service" and
                    monitor["spec"]["selector"]["matchLabels"].items() <= obj["metadata"]["labels"].items()]
        self.assertEqual(selected, [FULLNAME + "-headless"])

    def test_pods_run_as_non_root_read_only(self):
        for case, objects in self.rendered.items():
            for (kind, name), obj in objects.items():
                if kind != "StatefulSet":
                    continue
                with self.subTest(case=case, name=name):
                    pod = obj["spec"]["template"]["spec"]
                    self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                    self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
                    self.assertFalse(pod["automountServiceAccountToken"])
                    for container in pod["containers"]:
                        context = container["securityContext"]
                        self.assertTrue(context["readOnlyRootFilesystem"])
                        self.assertFalse(context["allowPrivilegeEscalation"])
                        self.assertEqual(context["capabilities"]["drop"], ["ALL"])

    def test_disruption_budget_and_network_policy(self):
        objects = self.rendered["production"]
        pod_labels = objects[("StatefulSet", FULLNAME)]["spec"]["template"]["metadata"]["labels"]
        pdb = objects[("PodDisruptionBudget", FULLNAME)]
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        self.assertLessEqual(pdb["spec"]["selector"]["matchLabels"].items(), pod_labels.items())
        policy = objects[("NetworkPolicy", FULLNAME)]["spec"]
        grpc_rule, metrics_rule = policy["ingress"]
        self.assertEqual(grpc_rule["ports"], [{"port": "grpc", "protocol": "TCP"}])
        self.assertEqual(grpc_rule["from"][1],
                         {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "inference-worker"}}})
        self.assertEqual(metrics_rule["from"], PRODUCTION["networkPolicy"]["metricsFrom"])
        etcd_policy = self.rendered["bundled-etcd-3-members"][("NetworkPolicy", FULLNAME + "-etcd")]
        self.assertEqual(etcd_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "etcd")


class RefusedValuesTest(unittest.TestCase):
    """Invalid values fail: values.schema.json (through jsonschema and through
    Helm, which checks it before rendering) and the templates' own checks."""

    SCHEMA_VIOLATIONS = {
        "unknown key": {"replicas": 3},
        "unknown server key": {"server": {"drainTimeout": 30}},
        "R above 16": {"server": {"replicas": 17}},
        "lease TTL below 2": {"server": {"leaseTtlS": 1}},
        "unknown eviction policy": {"server": {"ram": {"policy": "fifo"}}},
        "zero RAM tier": {"server": {"ram": {"capacityBytes": 0}}},
        "capacity as a string": {"server": {"disk": {"capacityBytes": "8Gi"}}},
        "port out of range": {"port": 70000},
        "etcd endpoint as a URL": {"etcd": {"endpoints": ["http://etcd:2379"]}},
        "etcd of 2 members": {"etcd": {"replicaCount": 2}},
        "TLS without a secret": {"tls": {"enabled": True}},
        "access without a secret": {"access": {"enabled": True}},
        "bad volume size": {"persistence": {"size": "lots"}},
        "bad cluster name": {"clusterName": "kv tier"},
        "unknown log level": {"server": {"logLevel": "verbose"}},
    }

    # Values each of which the schema admits but the templates refuse.
    TEMPLATE_REFUSALS = {
        "grace period within the drain": ({"terminationGracePeriodSeconds": 40}, "must exceed"),
        "grace period within drain and demotion":
            ({"server": {"shutdownDemoteMs": 25000}}, "must exceed"),
        "insecure off without TLS": ({"allowInsecure": False}, "needs tls.enabled"),
        "mTLS without TLS": ({"tls": {"clientAuth": True}}, "tls.clientAuth needs tls.enabled"),
        "both etcds": ({"etcd": {"endpoints": ["e:2379"]}}, "not both"),
        "cluster without etcd": ({"etcd": {"enabled": False}}, "needs etcd"),
        "more copies than nodes": ({"replicaCount": 2, "server": {"replicas": 3}}, "exceeds replicaCount"),
        "disk tier above the volume": ({"persistence": {"size": "4Gi"}}, "exceeds persistence.size"),
    }

    @classmethod
    def setUpClass(cls):
        cls.defaults = load_yaml(os.path.join(CHART, "values.yaml"))
        with open(os.path.join(CHART, "values.schema.json")) as f:
            cls.schema = json.load(f)
        jsonschema.Draft7Validator.check_schema(cls.schema)
        cls.validator = jsonschema.Draft7Validator(cls.schema)

    def test_good_values_pass_the_schema(self):
        for case, values in RenderedObjectsTest.CASES.items():
            with self.subTest(case=case):
                errors = list(self.validator.iter_errors(merged(self.defaults, values)))
                self.assertEqual(errors, [])

    def test_schema_refuses(self):
        for case, values in self.SCHEMA_VIOLATIONS.items():
            with self.subTest(case=case):
                self.assertFalse(self.validator.is_valid(merged(self.defaults, values)))
                with self.assertRaises(helm.HelmError) as caught:
                    render(values)
                self.assertIn("don't meet the specifications of the schema", str(caught.exception))

    def test_templates_refuse(self):
        for case, (values, message) in self.TEMPLATE_REFUSALS.items():
            with self.subTest(case=case):
                self.assertTrue(self.validator.is_valid(merged(self.defaults, values)))
                with self.assertRaises(helm.HelmError) as caught:
                    render(values)
                self.assertIn(message, str(caught.exception))


class CheckerCanFailTest(unittest.TestCase):
    """The checks above catch a broken chart: copies with one defect each."""

    def broken_copy(self, template, old, new):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        chart = os.path.join(tmp, "kvtier")
        shutil.copytree(CHART, chart)
        path = os.path.join(chart, "templates", template)
        with open(path) as f:
            text = f.read()
        self.assertIn(old, text)
        with open(path, "w") as f:
            f.write(text.replace(old, new, 1))
        return chart

    def test_template_syntax_error_fails_rendering(self):
        chart = self.broken_copy("services.yaml", "{{ .Values.port }}", "{{ .Values.port }")
        with self.assertRaises(helm.HelmError):
            render(chart_dir=chart)

    def test_invalid_object_fails_validation(self):
        chart = self.broken_copy("statefulset.yaml", "containerPort: {{ .Values.port }}",
                                 "containerPort: \"{{ .Values.port }}\"")
        sts = render(chart_dir=chart)[("StatefulSet", FULLNAME)]
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(sts, KUBE_VERSIONS[0], strict=True)

    def test_misspelled_config_field_fails_protoc(self):
        chart = self.broken_copy("configmap.yaml", "lease_ttl_s:", "lease_ttl:")
        self.assertNotEqual(encode_config(config_text(render(chart_dir=chart))).returncode, 0)


@unittest.skipUnless(os.environ.get("KVTIER_SERVER"), "KVTIER_SERVER not set")
class ServerTakesRenderedConfigTest(unittest.TestCase):
    """A rendered one-node config starts the real kvtier-server, with the
    pod's flags, listen and data_dir moved to loopback and a temporary dir."""

    def test_server_starts_on_rendered_config(self):
        objects = render({"replicaCount": 1, "server": {"replicas": 1}, "etcd": {"enabled": False},
                          "metrics": {"enabled": False}})
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        config = os.path.join(tmp, "server.txtpb")
        with open(config, "w") as f:
            f.write(config_text(objects))
        args = [a.replace("$(POD_NAME)", "kv-kvtier-0") for a in server_container(objects)["args"]]
        args[0] = "--config=" + config
        port_file = os.path.join(tmp, "port")
        with open(os.path.join(tmp, "server.log"), "w") as log:
            server = subprocess.Popen(
                [os.environ["KVTIER_SERVER"], *args, "--listen=127.0.0.1:0",
                 "--port_file=" + port_file, "--data_dir=" + os.path.join(tmp, "data")],
                stderr=log)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(port_file) or not read(port_file).strip():
                self.assertIsNone(server.poll(), read(os.path.join(tmp, "server.log")))
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            port = read(port_file).strip()
            # The image's checker, with Debian's python3 and python3-grpcio.
            health = subprocess.run(
                [os.path.join(ROOT, "container", "kvtier-health"), "--target=127.0.0.1:" + port],
                capture_output=True, text=True)
            self.assertEqual(health.returncode, 0, health.stderr)
        finally:
            server.terminate()
            self.assertEqual(server.wait(timeout=30), 0)
        self.assertIn("node_id=kv-kvtier-0", read(os.path.join(tmp, "server.log")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
