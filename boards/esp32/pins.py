# What differs between the supported chips. ADC pins are ADC1 only: ADC2
# cannot be read while Wi-Fi is on.
CHIPS = {
    # ESP32-WROOM-32 / DevKitC
    "esp32": {"adc_pins": (32, 33, 34, 35, 36, 39), "p1_uart": 2, "led": 2},
    # ESP32-C3 (single RISC-V core, one spare UART)
    "esp32c3": {"adc_pins": (0, 1, 2, 3, 4), "p1_uart": 1, "led": 8},
    # ESP32-S3
    "esp32s3": {"adc_pins": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), "p1_uart": 1, "led": 48},
}


def detect(machine_name):
    """Chip key from os.uname().machine, e.g. 'ESP32C3 module with ESP32C3'."""
    m = machine_name.upper()
    for key in ("esp32c3", "esp32s3"):
        if key.upper() in m:
            return key
    return "esp32"
