"""A ROS 2 node: subscribes to images, publishes class maps (mono8) made by segdeploy's Segmenter.

    ros2 run <your_pkg> segdeploy_node --ros-args -p deploy_dir:=/opt/models/unet \
        -p input_topic:=/camera/image_raw -p output_topic:=/segmentation/labels

Needs rclpy and sensor_msgs (a ROS 2 install); the conversion functions below do not, so
they can be tested anywhere. Encodings handled: rgb8, bgr8 (and rgba8/bgra8, alpha dropped).
"""

from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True)}


def image_from_msg(encoding: str, height: int, width: int, step: int, data: bytes) -> tuple[np.ndarray, bool]:
    """sensor_msgs/Image fields → (HxWx3 uint8 array, is_bgr)."""
    if encoding not in CHANNELS:
        raise ValueError(f"unsupported encoding {encoding!r}; expected one of {', '.join(CHANNELS)}")
    channels, bgr = CHANNELS[encoding]
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)
    image = rows[:, : width * channels].reshape(height, width, channels)[..., :3]
    return np.ascontiguousarray(image), bgr


def labels_to_msg_fields(labels: np.ndarray) -> dict:
    """HxW uint8 class map → the fields of a mono8 sensor_msgs/Image."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return {"encoding": "mono8", "height": labels.shape[0], "width": labels.shape[1], "step": labels.shape[1],
            "is_bigendian": 0, "data": labels.tobytes()}


def segment_message(segmenter, encoding: str, height: int, width: int, step: int, data: bytes) -> dict:
    """One sensor_msgs/Image's fields → the fields of its mono8 class map (what the node publishes)."""
    image, bgr = image_from_msg(encoding, height, width, step, data)
    return labels_to_msg_fields(segmenter(image, bgr=bgr))


def node_class():
    """The rclpy node class (imports ROS 2 only when called)."""
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from segdeploy import Segmenter

    class SegdeployNode(Node):
        def __init__(self, **kwargs):
            super().__init__("segdeploy", **kwargs)
            deploy_dir = self.declare_parameter("deploy_dir", "deploy/model").value
            self.segmenter = Segmenter(deploy_dir)  # picks a TensorRT engine when it can run here
            self.publisher = self.create_publisher(Image, self.declare_parameter("output_topic", "segmentation/labels").value, 1)
            self.create_subscription(Image, self.declare_parameter("input_topic", "image_raw").value, self.on_image, 1)
            self.get_logger().info(f"segmenting with {self.segmenter.artifact}")

        def on_image(self, msg: Image) -> None:
            fields = segment_message(self.segmenter, msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data))
            self.publisher.publish(Image(header=msg.header, **fields))

    return SegdeployNode


def main() -> None:  # pragma: no cover - needs a ROS 2 installation
    import rclpy

    rclpy.init()
    node = node_class()()
    try:
        rclpy.spin(node)
    finally:
        node.segmenter.close()
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
