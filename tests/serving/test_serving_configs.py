"""serving/ configs parse as the protos TF Serving reads them into."""

import pathlib

import pytest
import yaml
from google.protobuf import (
  descriptor_pb2,
  descriptor_pool,
  message_factory,
  text_format,
  wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

SERVING = pathlib.Path(__file__).resolve().parents[2] / "serving"


def _messages():
  """BatchingParameters and MonitoringConfig: the tensorflow-serving-api wheel does not ship
  their modules, so they are declared here with the fields and numbers of TF Serving's
  session_bundle_config.proto and monitoring_config.proto (a subset: unknown names fail)."""
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
      wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
  f = descriptor_pb2.FileDescriptorProto(name="twin_serving_configs.proto",
                                         package="tensorflow.serving", syntax="proto3",
                                         dependency=["google/protobuf/wrappers.proto"])
  label, types = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto
  batching = f.message_type.add(name="BatchingParameters")
  for number, name in enumerate(("max_batch_size", "batch_timeout_micros",
                                 "max_enqueued_batches", "num_batch_threads"), start=1):
    batching.field.add(name=name, number=number, type=types.TYPE_MESSAGE,
                       type_name=".google.protobuf.Int64Value", label=label.LABEL_OPTIONAL)
  batching.field.add(name="thread_pool_name", number=5, type=types.TYPE_MESSAGE,
                     type_name=".google.protobuf.StringValue", label=label.LABEL_OPTIONAL)
  batching.field.add(name="allowed_batch_sizes", number=6, type=types.TYPE_INT64,
                     label=label.LABEL_REPEATED)
  batching.field.add(name="pad_variable_length_inputs", number=7, type=types.TYPE_BOOL,
                     label=label.LABEL_OPTIONAL)
  prometheus = f.message_type.add(name="PrometheusConfig")
  prometheus.field.add(name="enable", number=1, type=types.TYPE_BOOL, label=label.LABEL_OPTIONAL)
  prometheus.field.add(name="path", number=2, type=types.TYPE_STRING, label=label.LABEL_OPTIONAL)
  monitoring = f.message_type.add(name="MonitoringConfig")
  monitoring.field.add(name="prometheus_config", number=1, type=types.TYPE_MESSAGE,
                       type_name=".tensorflow.serving.PrometheusConfig",
                       label=label.LABEL_OPTIONAL)
  pool.Add(f)
  return {name: message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
          for name in ("BatchingParameters", "MonitoringConfig")}


def test_models_config():
  config = text_format.Parse((SERVING / "models.config").read_text(),
                             model_server_config_pb2.ModelServerConfig())
  (model,) = config.model_config_list.config
  assert model.name == "twin" and model.base_path == "/models/twin"
  assert model.model_platform == "tensorflow"
  assert model.model_version_policy.latest.num_versions == 2
  assert model.version_labels["stable"] == 1


def test_batching_parameters_pad_variable_length_inputs():
  params = text_format.Parse((SERVING / "batching_parameters.txt").read_text(),
                             _messages()["BatchingParameters"]())
  assert params.pad_variable_length_inputs
  assert params.max_batch_size.value == 32 and params.batch_timeout_micros.value > 0


def test_monitoring_config_enables_prometheus():
  config = text_format.Parse((SERVING / "monitoring.config").read_text(),
                             _messages()["MonitoringConfig"]())
  assert config.prometheus_config.enable
  assert config.prometheus_config.path.startswith("/monitoring/")


def test_unknown_field_is_rejected():
  with pytest.raises(text_format.ParseError):
    text_format.Parse("max_batch_sise { value: 1 }", _messages()["BatchingParameters"]())


def test_compose_mounts_the_configs_and_uses_a_2_20_image():
  compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
  service = compose["services"]["tfserving"]
  assert service["image"].startswith("tensorflow/serving:2.20")
  flags = " ".join(service["command"])
  for name in ("models.config", "batching_parameters.txt", "monitoring.config"):
    assert f"/config/{name}" in flags
    assert any(v.startswith(f"./{name}:") for v in service["volumes"])
  assert "--enable_batching=true" in flags and "--enable_model_warmup=true" in flags
