"""Hardware adapters: the only modules that import evdev, pyserial, gpiozero, picamera2 and pyzbar.

Each module is imported only when the station's configuration asks for it, so a station (or a
laptop) without one of these libraries still runs the others.
"""
